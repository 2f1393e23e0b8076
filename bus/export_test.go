package bus

// InternalSecret is the in-process identities' password, for tests that
// check it never shows.
func (s *Server) InternalSecret() string { return s.internalSecret }

package coordinator

// Log keys.
const (
	KeyComponent = "component"
	KeyTown      = "town"
	KeyErr       = "err"
	KeySubject   = "subject"
	KeyExpires   = "expiresAt"
	KeyNext      = "nextRefreshAt"
	KeyCount     = "count"
	KeyMethod    = "method"
)

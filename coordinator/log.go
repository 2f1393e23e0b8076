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
	// KeyCorrelation is the id an internal error's reply gives the caller.
	KeyCorrelation = "correlationId"
)

// Domain log keys.
const (
	KeyAgent  = "agent"
	KeyRun    = "run"
	KeyBead   = "bead"
	KeyReason = "reason"
)

package admin

import (
	"errors"
	"runtime"
)

// errHashBusy refuses a password hash when MaxConcurrentHashes are already
// running; the client gets 429 with Retry-After.
var errHashBusy = errors.New("admin: too many password hashes in progress")

// hashLimiter caps the argon2id hashes computed at once. Each takes
// argonMemory (19 MiB) for its duration, and logins are unauthenticated, so
// without a cap a burst of logins is a burst of memory. A hash that finds
// every slot taken fails at once rather than queueing: a queue would hold
// the requests' memory and connections instead.
type hashLimiter struct {
	slots chan struct{}
	// hook, when set, runs with a slot held before hashing (tests block in
	// it to fill the slots deterministically).
	hook func()
}

func newHashLimiter(n int, hook func()) *hashLimiter {
	if n <= 0 {
		n = 2 * runtime.GOMAXPROCS(0)
	}
	return &hashLimiter{slots: make(chan struct{}, n), hook: hook}
}

// do runs f holding a slot, or returns errHashBusy without running it.
func (h *hashLimiter) do(f func()) error {
	select {
	case h.slots <- struct{}{}:
	default:
		return errHashBusy
	}
	defer func() { <-h.slots }()
	if h.hook != nil {
		h.hook()
	}
	f()
	return nil
}

// hashPassword hashes password within the cap.
func (s *Server) hashPassword(password string) (string, error) {
	var hash string
	var err error
	if lerr := s.hashes.do(func() { hash, err = hashPassword(password) }); lerr != nil {
		return "", lerr
	}
	return hash, err
}

// verifyPassword verifies password within the cap.
func (s *Server) verifyPassword(encoded, password string) (bool, error) {
	var ok bool
	var err error
	if lerr := s.hashes.do(func() { ok, err = verifyPassword(encoded, password) }); lerr != nil {
		return false, lerr
	}
	return ok, err
}

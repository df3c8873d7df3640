package admin

// WithHashHook makes every password hash of the server call hook with its
// slot held, so tests can fill the slots deterministically.
func WithHashHook(hook func()) func(*Options) {
	return func(o *Options) { o.hashHook = hook }
}

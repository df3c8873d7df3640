//go:build !linux

package cli

import (
	"errors"
	"io"
)

// isTerminal reports false: prompting without echo is only implemented on
// Linux; elsewhere use --password-stdin or the environment.
func isTerminal(io.Reader) bool { return false }

func readPassword(io.Reader) (string, error) {
	return "", errors.New("password prompt not supported on this platform")
}

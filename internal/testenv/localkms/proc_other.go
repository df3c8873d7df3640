//go:build !linux

package localkms

import "os/exec"

// setProcAttr does nothing where there is no parent-death signal; the test's
// cleanup still kills the server.
func setProcAttr(*exec.Cmd) {}

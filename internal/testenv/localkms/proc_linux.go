package localkms

import (
	"os/exec"
	"syscall"
)

// setProcAttr makes the kernel kill local-kms if the test binary dies without
// running its cleanups (a panic, a timeout, a SIGKILL), so no server outlives
// its test.
func setProcAttr(cmd *exec.Cmd) {
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
}

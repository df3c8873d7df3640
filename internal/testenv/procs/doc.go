// Package procs starts private Postgres and Redis server processes for
// fault-injection tests: tests that stop, restart or crash the server under
// the code being tested. Unlike package testenv, which hands out throwaway
// databases on the machine's shared servers, every StartPostgres and
// StartRedis call runs a new server, owned by the test, on a free loopback
// port with all its files under t.TempDir(). The shared servers are never
// touched.
//
// # Finding the servers
//
// Postgres server binaries (initdb and postgres) are looked for, in order, in
// $CCPROXY_PG_BINDIR, in the directory printed by `pg_config --bindir`, next
// to an initdb found on PATH, and in the newest /usr/lib/postgresql/<ver>/bin
// (where Debian's postgresql package puts them; it does not put them on
// PATH). redis-server is looked for on PATH and at /usr/bin/redis-server.
// When a server is missing the test is skipped with a message naming what is
// missing, unless CCPROXY_REQUIRE_FAULT_TESTS=1, in which case it fails: CI
// sets the variable where the packages are known to be installed, so a broken
// install cannot silently turn fault tests into skips.
//
// # Running as root
//
// Postgres refuses to run as root, and tests often run as root in containers
// and CI. When the test binary's effective uid is 0, initdb and postgres are
// started directly (no runuser/su wrapper, so the child's pid is the
// postmaster's) with their uid and gid switched to the "postgres" account
// (falling back to "nobody") through syscall.SysProcAttr.Credential. The
// test's temporary directory is chowned to that account, and the directories
// the testing package created between os.TempDir() and it get o+x so the
// account can reach it. Redis runs as the test's user, root included.
//
// # Processes never outlive the test
//
// Servers are started in their own process group with a parent-death signal
// of SIGKILL (Linux), from a goroutine locked to an OS thread that never
// exits, so a test binary that panics, times out or is killed takes its
// servers with it. Cleanups registered with t.Cleanup stop the servers (fast
// shutdown, then SIGKILL) whether the test passed or failed. Postgres puts
// each backend in its own process group, so killing the postmaster's group
// is not enough: Kill and the cleanups freeze the postmaster with SIGSTOP,
// SIGKILL every descendant found in /proc, then SIGKILL the postmaster.
//
// # Durability
//
// Postgres runs with fsync=off. A killed process loses nothing the kernel
// already has, so commits acknowledged before Kill survive it; only a crash
// of the whole machine could lose them, and tests here do not simulate that.
// Redis runs without persistence by default (save "", appendonly no), so a
// restart empties it; WithAOF turns on appendonly with appendfsync always.
//
// Ports are chosen by listening on 127.0.0.1:0 and closing the listener; if
// another process takes the port before the server binds it, start is
// retried on a new port, up to three attempts. Start after Stop or Kill
// reuses the same port and data directory.
package procs

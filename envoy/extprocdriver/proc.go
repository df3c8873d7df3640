package extprocdriver

import (
	"bytes"
	"fmt"
	"os"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// userHZ is the unit of the CPU times in /proc/<pid>/stat: USER_HZ, which
// is 100 on every Linux architecture (sysconf(_SC_CLK_TCK); proc(5)).
const userHZ = 100

// ProcessCPU returns the CPU time process pid has used so far: user plus
// system time of all its threads (fields 14 and 15 of /proc/<pid>/stat),
// in steps of 10 ms, so a measured run should last seconds.
func ProcessCPU(pid int) (time.Duration, error) {
	raw, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0, fmt.Errorf("server CPU time: %w", err)
	}
	return parseStatCPU(raw)
}

// parseStatCPU reads utime+stime from a /proc/<pid>/stat line. The command
// name (field 2) is in parentheses and may hold spaces and parentheses
// itself, so fields are counted after the last ')'.
func parseStatCPU(raw []byte) (time.Duration, error) {
	end := bytes.LastIndexByte(raw, ')')
	if end < 0 {
		return 0, fmt.Errorf("malformed /proc stat %.80q", raw)
	}
	// Field 3 (state) is the first after ") "; utime is 14, stime 15.
	f := strings.Fields(string(raw[end+1:]))
	if len(f) < 13 {
		return 0, fmt.Errorf("malformed /proc stat %.80q", raw)
	}
	var ticks int64
	for _, s := range f[11:13] {
		n, err := strconv.ParseInt(s, 10, 64)
		if err != nil {
			return 0, fmt.Errorf("malformed /proc stat: %w", err)
		}
		ticks += n
	}
	return time.Duration(ticks) * time.Second / userHZ, nil
}

// ProcessMemory returns the resident set size of pid now and at its peak
// (VmRSS and VmHWM of /proc/<pid>/status), in bytes.
func ProcessMemory(pid int) (rss, peak int64, err error) {
	raw, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0, 0, fmt.Errorf("server memory: %w", err)
	}
	return parseStatusMemory(raw)
}

func parseStatusMemory(raw []byte) (rss, peak int64, err error) {
	for line := range strings.SplitSeq(string(raw), "\n") {
		name, value, ok := strings.Cut(line, ":")
		if !ok || name != "VmRSS" && name != "VmHWM" {
			continue
		}
		kb, err := strconv.ParseInt(strings.TrimSuffix(strings.TrimSpace(value), " kB"), 10, 64)
		if err != nil {
			return 0, 0, fmt.Errorf("/proc status %s: %w", name, err)
		}
		if name == "VmRSS" {
			rss = kb << 10
		} else {
			peak = kb << 10
		}
	}
	if rss == 0 || peak == 0 {
		return 0, 0, fmt.Errorf("no VmRSS or VmHWM in /proc status")
	}
	return rss, peak, nil
}

// selfCPU is the driver's own CPU time: on a small machine it competes with
// the server for cores, so it belongs in the report.
func selfCPU() time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

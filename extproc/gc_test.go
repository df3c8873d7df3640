package extproc

import (
	"io/fs"
	"math"
	"runtime/debug"
	"testing"
)

func TestTuneRuntime(t *testing.T) {
	origGC := debug.SetGCPercent(100)
	origLimit := debug.SetMemoryLimit(-1)
	t.Cleanup(func() {
		debug.SetGCPercent(origGC)
		debug.SetMemoryLimit(origLimit)
	})
	files := func(m map[string]string) func(string) ([]byte, error) {
		return func(name string) ([]byte, error) {
			if v, ok := m[name]; ok {
				return []byte(v), nil
			}
			return nil, fs.ErrNotExist
		}
	}
	tests := []struct {
		name      string
		env       map[string]string
		cgroup    map[string]string
		wantGC    int
		wantLimit int64 // returned and set; 0: left at math.MaxInt64
	}{
		{"cgroup v2 limit", nil, map[string]string{"/sys/fs/cgroup/memory.max": "536870912\n"}, GCPercent, 483183820},
		{"cgroup v1 limit", nil, map[string]string{"/sys/fs/cgroup/memory/memory.limit_in_bytes": "1073741824\n"}, GCPercent, 966367641},
		{"no limit (v2 max)", nil, map[string]string{"/sys/fs/cgroup/memory.max": "max\n"}, GCPercent, 0},
		{"no limit (v1 unlimited)", nil, map[string]string{"/sys/fs/cgroup/memory/memory.limit_in_bytes": "9223372036854771712\n"}, GCPercent, 0},
		{"no cgroup files", nil, nil, GCPercent, 0},
		{"GOGC and GOMEMLIMIT set: the runtime's own reading stands", map[string]string{"GOGC": "50", "GOMEMLIMIT": "100MiB"},
			map[string]string{"/sys/fs/cgroup/memory.max": "536870912"}, 100, 0},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			debug.SetGCPercent(100)
			debug.SetMemoryLimit(math.MaxInt64)
			got := TuneRuntime(func(k string) string { return tt.env[k] }, files(tt.cgroup))
			if got != tt.wantLimit {
				t.Errorf("TuneRuntime = %d, want %d", got, tt.wantLimit)
			}
			if gc := debug.SetGCPercent(100); gc != tt.wantGC {
				t.Errorf("GC percent = %d, want %d", gc, tt.wantGC)
			}
			want := tt.wantLimit
			if want == 0 {
				want = math.MaxInt64
			}
			if l := debug.SetMemoryLimit(-1); l != want {
				t.Errorf("memory limit = %d, want %d", l, want)
			}
		})
	}
}

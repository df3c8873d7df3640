package extproc

import (
	"runtime/debug"
	"testing"
)

func TestSetGCPercent(t *testing.T) {
	orig := debug.SetGCPercent(100)
	t.Cleanup(func() { debug.SetGCPercent(orig) })
	tests := []struct {
		gogc string
		want int
	}{
		{"", GCPercent},
		{"50", 100}, // GOGC set: the runtime's own reading of it stands
		{"off", 100},
	}
	for _, tt := range tests {
		t.Run("GOGC="+tt.gogc, func(t *testing.T) {
			debug.SetGCPercent(100)
			SetGCPercent(func(k string) string {
				if k == "GOGC" {
					return tt.gogc
				}
				return ""
			})
			if got := debug.SetGCPercent(100); got != tt.want {
				t.Errorf("GC percent = %d, want %d", got, tt.want)
			}
		})
	}
}

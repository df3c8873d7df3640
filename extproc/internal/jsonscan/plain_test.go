package jsonscan

import (
	"math/rand/v2"
	"testing"
)

// TestPlainPrefix checks the word-at-a-time scan against the byte-wise
// definition: every byte value in every position of a word, on random
// plain backgrounds.
func TestPlainPrefix(t *testing.T) {
	isSpecial := func(c byte) bool { return c == '"' || c == '\\' || c < 0x20 }
	rng := rand.New(rand.NewPCG(1, 2))
	for trial := 0; trial < 64; trial++ {
		bg := make([]byte, 24)
		for i := range bg {
			for {
				bg[i] = byte(rng.IntN(256))
				if !isSpecial(bg[i]) {
					break
				}
			}
		}
		if n := PlainPrefix(bg); n != 24 {
			t.Fatalf("PlainPrefix(%q) = %d, want 24", bg, n)
		}
		if n := PlainPrefix(bg[:23]); n != 16 {
			t.Fatalf("PlainPrefix of 23 plain bytes = %d, want 16 (whole words only)", n)
		}
		for pos := 0; pos < 24; pos++ {
			for c := 0; c < 256; c++ {
				w := append([]byte(nil), bg...)
				w[pos] = byte(c)
				want := 24
				if isSpecial(byte(c)) {
					want = pos / 8 * 8
				}
				if got := PlainPrefix(w); got != want {
					t.Fatalf("PlainPrefix(%q) = %d, want %d", w, got, want)
				}
			}
		}
	}
}

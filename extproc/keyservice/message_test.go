package keyservice

import (
	"bytes"
	"strings"
	"testing"
)

func TestParseMessage(t *testing.T) {
	h1 := bytes.Repeat([]byte{0xab}, 32)
	h2 := bytes.Repeat([]byte{0x01}, 32)
	for _, tc := range []struct {
		name    string
		msg     string
		purge   bool
		hashes  [][]byte
		wantErr bool
	}{
		{"purge", "purge", true, nil, false},
		{"one key", encodeKeys([][]byte{h1}), false, [][]byte{h1}, false},
		{"two keys", encodeKeys([][]byte{h1, h2}), false, [][]byte{h1, h2}, false},
		{"no keys", "keys", false, nil, true},
		{"unknown verb", "flush " + strings.Repeat("ab", 32), false, nil, true},
		{"short hash", "keys abab", false, nil, true},
		{"not hex", "keys " + strings.Repeat("zz", 32), false, nil, true},
		{"empty", "", false, nil, true},
		{"too many", "keys" + strings.Repeat(" "+strings.Repeat("ab", 32), maxHashesPerMessage+1), false, nil, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			purge, hashes, err := parseMessage(tc.msg)
			if (err != nil) != tc.wantErr {
				t.Fatalf("err = %v, wantErr %v", err, tc.wantErr)
			}
			if purge != tc.purge || len(hashes) != len(tc.hashes) {
				t.Fatalf("= %v, %x; want %v, %x", purge, hashes, tc.purge, tc.hashes)
			}
			for i := range hashes {
				if !bytes.Equal(hashes[i], tc.hashes[i]) {
					t.Fatalf("hash %d = %x, want %x", i, hashes[i], tc.hashes[i])
				}
			}
		})
	}
}

func FuzzParseMessage(f *testing.F) {
	f.Add("purge")
	f.Add(encodeKeys([][]byte{bytes.Repeat([]byte{7}, 32)}))
	f.Add("keys zz")
	f.Add("keys  " + strings.Repeat("0", 64) + "\t" + strings.Repeat("f", 64))
	f.Fuzz(func(t *testing.T, msg string) {
		purge, hashes, err := parseMessage(msg)
		if err != nil {
			return
		}
		if purge {
			return
		}
		for _, h := range hashes {
			if len(h) != 32 {
				t.Fatalf("hash of %d bytes accepted", len(h))
			}
		}
		// A parsed message re-encodes to one that parses to the same hashes.
		_, again, err := parseMessage(encodeKeys(hashes))
		if err != nil || len(again) != len(hashes) {
			t.Fatalf("round trip: %v, %d hashes, want %d", err, len(again), len(hashes))
		}
	})
}

package keylookup

import (
	"bytes"
	"encoding/hex"
	"fmt"
	"slices"
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

// FuzzParseMessage checks parseMessage against the grammar: "purge", or
// "keys" and 1 to maxHashesPerMessage hex hashes of keys.HashLen bytes,
// separated by white space. Accepted hashes are exactly the tokens'
// bytes, and they re-encode to the canonical message, which parses to the
// same hashes.
func FuzzParseMessage(f *testing.F) {
	f.Add("purge")
	f.Add(" purge")
	f.Add(encodeKeys([][]byte{bytes.Repeat([]byte{7}, 32)}))
	f.Add("keys zz")
	f.Add("keys  " + strings.Repeat("0", 64) + "\t" + strings.Repeat("f", 64))
	f.Add("keys\n" + strings.Repeat("aB", 32) + "\u2028" + strings.Repeat("Cd", 32) + " ")
	f.Add("keys " + strings.Repeat("0", 63) + "g")
	f.Add("KEYS " + strings.Repeat("0", 64))
	f.Add("purge " + strings.Repeat("0", 64))
	f.Add("keys" + strings.Repeat(" "+strings.Repeat("e", 64), maxHashesPerMessage))
	f.Add("keys" + strings.Repeat(" "+strings.Repeat("e", 64), maxHashesPerMessage+1))
	f.Fuzz(func(t *testing.T, msg string) {
		purge, hashes, err := parseMessage(msg)
		if purge != (msg == "purge") {
			t.Fatalf("parseMessage(%s) purge = %v", short(msg), purge)
		}
		if purge {
			if err != nil || hashes != nil {
				t.Fatalf("purge: %x, %v", hashes, err)
			}
			return
		}
		tokens := strings.Fields(msg)
		wellFormed := len(tokens) >= 2 && len(tokens) <= 1+maxHashesPerMessage && tokens[0] == "keys"
		for _, tok := range tokens[min(1, len(tokens)):] {
			wellFormed = wellFormed && len(tok) == 64 && strings.Trim(tok, "0123456789abcdefABCDEF") == ""
		}
		if wellFormed != (err == nil) {
			t.Fatalf("parseMessage(%s) err = %v, well formed = %v", short(msg), err, wellFormed)
		}
		if err != nil {
			if hashes != nil {
				t.Fatalf("hashes %x returned with error %v", hashes, err)
			}
			return
		}
		if len(hashes) != len(tokens)-1 {
			t.Fatalf("%d hashes from %d tokens", len(hashes), len(tokens)-1)
		}
		for i, h := range hashes {
			if got := hex.EncodeToString(h); got != strings.ToLower(tokens[i+1]) {
				t.Fatalf("hash %d = %s, want token %s", i, got, tokens[i+1])
			}
		}
		canonical := "keys " + strings.ToLower(strings.Join(tokens[1:], " "))
		if enc := encodeKeys(hashes); enc != canonical {
			t.Fatalf("encodeKeys = %s, want %s", short(enc), short(canonical))
		}
		p, again, err := parseMessage(canonical)
		if err != nil || p || !slices.EqualFunc(again, hashes, bytes.Equal) {
			t.Fatalf("round trip: %v, %v, %x; want %x", err, p, again, hashes)
		}
	})
}

// short quotes s for a failure message, cut to its first 100 bytes.
func short(s string) string {
	if len(s) <= 100 {
		return fmt.Sprintf("%q", s)
	}
	return fmt.Sprintf("%q… (%d bytes)", s[:100], len(s))
}

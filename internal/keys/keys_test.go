package keys

import (
	"encoding/base64"
	"encoding/hex"
	"errors"
	"strings"
	"sync"
	"testing"
)

// fixedKey is "ak_" + base64url(bytes 0x00..0x1f).
const fixedKey = "ak_AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8"

var fixedSecret = []byte("0123456789abcdef0123456789abcdef")

func TestGenerateFormat(t *testing.T) {
	for i := 0; i < 100; i++ {
		k, err := Generate()
		if err != nil {
			t.Fatal(err)
		}
		if len(k) != 46 {
			t.Fatalf("len(%q) = %d, want 46", k, len(k))
		}
		if !strings.HasPrefix(k, "ak_") {
			t.Fatalf("%q lacks ak_ prefix", k)
		}
		raw, err := base64.RawURLEncoding.DecodeString(k[3:])
		if err != nil {
			t.Fatalf("decode %q: %v", k, err)
		}
		if len(raw) != 32 {
			t.Fatalf("%q decodes to %d bytes, want 32", k, len(raw))
		}
		if got, err := Parse(k); err != nil || got != k {
			t.Fatalf("Parse(%q) = %q, %v; want the key back", k, got, err)
		}
	}
}

func TestGenerateUnique(t *testing.T) {
	const n = 10000
	seen := make(map[string]struct{}, n)
	for i := 0; i < n; i++ {
		k, err := Generate()
		if err != nil {
			t.Fatal(err)
		}
		if _, dup := seen[k]; dup {
			t.Fatalf("duplicate key after %d keys", i)
		}
		seen[k] = struct{}{}
	}
}

func TestParse(t *testing.T) {
	body := fixedKey[3:]
	tests := []struct {
		name  string
		in    string
		valid bool
	}{
		{"valid", fixedKey, true},
		{"valid all ones", "ak_" + base64.RawURLEncoding.EncodeToString([]byte(strings.Repeat("\xff", 32))), true},
		{"valid dash and underscore", "ak_-_" + body[2:], true},
		{"empty", "", false},
		{"prefix only", "ak_", false},
		{"no prefix", body, false},
		{"wrong prefix", "AK_" + body, false},
		{"other prefix same length", "sk_" + body, false},
		{"one char short", fixedKey[:45], false},
		{"one char long", fixedKey + "A", false},
		{"padding appended", fixedKey + "=", false},
		{"padding replaces last char", fixedKey[:45] + "=", false},
		{"std alphabet plus", "ak_+" + body[1:], false},
		{"std alphabet slash", "ak_/" + body[1:], false},
		{"leading space", " " + fixedKey[:45], false},
		{"trailing space", fixedKey[:45] + " ", false},
		{"trailing newline", fixedKey[:45] + "\n", false},
		{"embedded newline", "ak_" + body[:20] + "\n" + body[21:], false},
		{"embedded CR", "ak_" + body[:20] + "\r" + body[21:], false},
		{"NUL byte", "ak_" + body[:42] + "\x00", false},
		{"non-ASCII", "ak_" + body[:41] + "é", false},
		{"non-canonical trailing bits", fixedKey[:45] + "9", false},
		{"whole key twice", fixedKey + fixedKey, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := Parse(tt.in)
			if tt.valid {
				if err != nil {
					t.Fatalf("Parse: %v", err)
				}
				if got != tt.in {
					t.Fatalf("Parse = %q, want %q", got, tt.in)
				}
				return
			}
			if err == nil {
				t.Fatalf("Parse(%q) accepted a malformed key", tt.in)
			}
			if !errors.Is(err, ErrMalformed) {
				t.Fatalf("error %v does not wrap ErrMalformed", err)
			}
			if got != "" {
				t.Fatalf("Parse returned %q with an error", got)
			}
			if len(tt.in) > 8 && strings.Contains(err.Error(), tt.in[3:11]) {
				t.Fatalf("error %q echoes the input", err)
			}
		})
	}
}

func TestDisplayPrefix(t *testing.T) {
	tests := []struct {
		in, want string
	}{
		{fixedKey, "ak_AAECAwQF"},
		{"ak_-_abcdefghij", "ak_-_abcdef"},
		{"ak_abc", "ak_abc"},
	}
	for _, tt := range tests {
		t.Run(tt.in, func(t *testing.T) {
			if got := DisplayPrefix(tt.in); got != tt.want {
				t.Fatalf("DisplayPrefix(%q) = %q, want %q", tt.in, got, tt.want)
			}
		})
	}
}

func TestNewHasherSecretLength(t *testing.T) {
	tests := []struct {
		n  int
		ok bool
	}{{0, false}, {16, false}, {31, false}, {32, true}, {64, true}}
	for _, tt := range tests {
		_, err := NewHasher(make([]byte, tt.n))
		if (err == nil) != tt.ok {
			t.Errorf("NewHasher(%d bytes) error = %v, want ok=%v", tt.n, err, tt.ok)
		}
	}
}

func TestHashStable(t *testing.T) {
	tests := []struct {
		name   string
		secret []byte
		want   string
	}{
		// Independently computed: Python hmac.new(secret, key, sha256).hexdigest().
		{"secret A", fixedSecret, "fa31c717a7364ee131851065b1d77c83a41e558b3f2152d694274559af49d0f2"},
		{"secret B", []byte("0123456789abcdef0123456789abcdeF"), "297afd48750eac98a8baaa4d1babd544cea8c2142d1735006e2c06c8a6cae7c1"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			h, err := NewHasher(tt.secret)
			if err != nil {
				t.Fatal(err)
			}
			for i := 0; i < 3; i++ { // repeated calls reuse pooled HMAC states
				if got := hex.EncodeToString(h.Hash(fixedKey)); got != tt.want {
					t.Fatalf("call %d: Hash = %s, want %s", i, got, tt.want)
				}
			}
		})
	}
}

func TestHasherCopiesSecret(t *testing.T) {
	secret := append([]byte(nil), fixedSecret...)
	h, err := NewHasher(secret)
	if err != nil {
		t.Fatal(err)
	}
	clear(secret)
	want := "fa31c717a7364ee131851065b1d77c83a41e558b3f2152d694274559af49d0f2"
	if got := hex.EncodeToString(h.Hash(fixedKey)); got != want {
		t.Fatalf("Hash after caller zeroed its secret = %s, want %s", got, want)
	}
}

func TestHashDistinguishes(t *testing.T) {
	ha, _ := NewHasher(fixedSecret)
	hb, _ := NewHasher([]byte("another-secret-that-is-32-bytes!"))
	other, _ := Generate()
	if Equal(ha.Hash(fixedKey), hb.Hash(fixedKey)) {
		t.Error("different secrets gave the same hash")
	}
	if Equal(ha.Hash(fixedKey), ha.Hash(other)) {
		t.Error("different keys gave the same hash")
	}
	if n := len(ha.Hash(fixedKey)); n != HashLen {
		t.Errorf("len(Hash) = %d, want %d", n, HashLen)
	}
}

func TestHashConcurrent(t *testing.T) {
	h, _ := NewHasher(fixedSecret)
	want := h.Hash(fixedKey)
	var wg sync.WaitGroup
	for g := 0; g < 8; g++ {
		wg.Go(func() {
			for i := 0; i < 500; i++ {
				if got := h.Hash(fixedKey); !Equal(got, want) {
					t.Errorf("concurrent Hash = %x, want %x", got, want)
					return
				}
			}
		})
	}
	wg.Wait()
}

func TestEqual(t *testing.T) {
	tests := []struct {
		a, b []byte
		want bool
	}{
		{nil, nil, true},
		{[]byte{1, 2}, []byte{1, 2}, true},
		{[]byte{1, 2}, []byte{1, 3}, false},
		{[]byte{1, 2}, []byte{1, 2, 3}, false},
		{[]byte{}, []byte{0}, false},
	}
	for _, tt := range tests {
		if got := Equal(tt.a, tt.b); got != tt.want {
			t.Errorf("Equal(%x, %x) = %v, want %v", tt.a, tt.b, got, tt.want)
		}
	}
}

func FuzzParse(f *testing.F) {
	for _, s := range []string{
		fixedKey, "", "ak_", fixedKey + "=", fixedKey[:45] + "9", fixedKey[:45] + "\n",
		"ak_+" + fixedKey[4:], "AK_" + fixedKey[3:], "ak_" + strings.Repeat("_", 43),
	} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		got, err := Parse(s)
		if err != nil {
			if !errors.Is(err, ErrMalformed) {
				t.Fatalf("error %v does not wrap ErrMalformed", err)
			}
			return
		}
		if got != s {
			t.Fatalf("Parse(%q) = %q", s, got)
		}
		raw, err := base64.RawURLEncoding.DecodeString(s[len(Prefix):])
		if err != nil || len(raw) != 32 {
			t.Fatalf("accepted %q decodes to %d bytes, err %v", s, len(raw), err)
		}
		if re := Prefix + base64.RawURLEncoding.EncodeToString(raw); re != s {
			t.Fatalf("accepted %q re-encodes to %q", s, re)
		}
	})
}

func BenchmarkHash(b *testing.B) {
	h, err := NewHasher(fixedSecret)
	if err != nil {
		b.Fatal(err)
	}
	b.ReportAllocs()
	for b.Loop() {
		h.Hash(fixedKey)
	}
}

func BenchmarkHashParallel(b *testing.B) {
	h, err := NewHasher(fixedSecret)
	if err != nil {
		b.Fatal(err)
	}
	b.ReportAllocs()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			h.Hash(fixedKey)
		}
	})
}

func TestDerive(t *testing.T) {
	h, err := NewHasher([]byte("0123456789abcdef0123456789abcdef"))
	if err != nil {
		t.Fatal(err)
	}
	a, b := h.Derive("a"), h.Derive("b")
	if len(a) != HashLen || string(a) == string(b) || string(a) != string(h.Derive("a")) {
		t.Fatalf("Derive: a=%x b=%x", a, b)
	}
	other, err := NewHasher([]byte("another secret, also 32 bytes long"))
	if err != nil {
		t.Fatal(err)
	}
	if string(other.Derive("a")) == string(a) {
		t.Fatal("derived keys do not depend on the secret")
	}
	if _, err := Parse("ccproxy-derive\x00a"); err == nil {
		t.Fatal("a derivation input parses as an access key")
	}
}

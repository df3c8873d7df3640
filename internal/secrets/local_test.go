package secrets

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"strings"
	"sync"
	"testing"
)

// testMasterKey is bytes 0x00..0x1f; testMasterKey2 differs in its last byte.
var (
	testMasterKey  = []byte("\x00\x01\x02\x03\x04\x05\x06\x07\x08\x09\x0a\x0b\x0c\x0d\x0e\x0f\x10\x11\x12\x13\x14\x15\x16\x17\x18\x19\x1a\x1b\x1c\x1d\x1e\x1f")
	testMasterKey2 = []byte("\x00\x01\x02\x03\x04\x05\x06\x07\x08\x09\x0a\x0b\x0c\x0d\x0e\x0f\x10\x11\x12\x13\x14\x15\x16\x17\x18\x19\x1a\x1b\x1c\x1d\x1e\xff")
)

func newTestLocal(t testing.TB, key []byte) *Local {
	t.Helper()
	l, err := NewLocal(key)
	if err != nil {
		t.Fatal(err)
	}
	return l
}

func TestNewLocalKeyLength(t *testing.T) {
	for _, n := range []int{0, 16, 24, 31, 33, 64} {
		if _, err := NewLocal(make([]byte, n)); err == nil {
			t.Errorf("NewLocal(%d bytes) succeeded, want error", n)
		}
	}
	if _, err := NewLocal(make([]byte, 32)); err != nil {
		t.Errorf("NewLocal(32 bytes): %v", err)
	}
}

func TestLocalKeyID(t *testing.T) {
	// sha256("ccproxy secrets master key id v1\x00" || key)[:8], computed independently:
	// python3 -c 'import hashlib;print(hashlib.sha256(b"ccproxy secrets master key id v1\0"+bytes(range(32))).hexdigest()[:16])'
	const want = "7171acb7d97c7630"
	if got := newTestLocal(t, testMasterKey).KeyID(); got != want {
		t.Fatalf("KeyID = %s, want %s", got, want)
	}
	if newTestLocal(t, testMasterKey2).KeyID() == want {
		t.Fatal("different master keys have the same id")
	}
}

func TestLocalRoundTrip(t *testing.T) {
	ctx := context.Background()
	l := newTestLocal(t, testMasterKey)
	tests := []struct {
		name      string
		plaintext []byte
		aad       []byte
	}{
		{"empty plaintext no aad", nil, nil},
		{"bedrock key", []byte("ABSKQmVkcm9ja0FQSUtleS1leGFtcGxl"), []byte("credential:7f0c")},
		{"binary", []byte{0, 1, 2, 255, 0}, []byte{0}},
		{"large", bytes.Repeat([]byte("x"), 1<<16), []byte("row-1")},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			blob, err := l.Seal(ctx, tt.plaintext, tt.aad)
			if err != nil {
				t.Fatal(err)
			}
			if want := 2 + keyIDLen + nonceLen + len(tt.plaintext) + tagLen; len(blob) != want {
				t.Fatalf("len(blob) = %d, want %d", len(blob), want)
			}
			if blob[0] != 1 || blob[1] != 1 || hex.EncodeToString(blob[2:10]) != l.KeyID() {
				t.Fatalf("blob header = %x, want 01 01 %s", blob[:10], l.KeyID())
			}
			if len(tt.plaintext) > 4 && bytes.Contains(blob, tt.plaintext) {
				t.Fatal("blob contains the plaintext")
			}
			got, err := l.Open(ctx, blob, tt.aad)
			if err != nil {
				t.Fatal(err)
			}
			if !bytes.Equal(got, tt.plaintext) {
				t.Fatalf("Open = %q, want %q", got, tt.plaintext)
			}
			// A second sealer with the same master key (another replica,
			// or after a restart) opens it too.
			got, err = newTestLocal(t, testMasterKey).Open(ctx, blob, tt.aad)
			if err != nil || !bytes.Equal(got, tt.plaintext) {
				t.Fatalf("Open with a fresh sealer = %q, %v", got, err)
			}
		})
	}
}

func TestLocalSealIsRandomized(t *testing.T) {
	ctx := context.Background()
	l := newTestLocal(t, testMasterKey)
	a, _ := l.Seal(ctx, []byte("same"), []byte("aad"))
	b, _ := l.Seal(ctx, []byte("same"), []byte("aad"))
	if bytes.Equal(a, b) {
		t.Fatal("two seals of the same plaintext are identical")
	}
}

func TestLocalOpenRejects(t *testing.T) {
	ctx := context.Background()
	l := newTestLocal(t, testMasterKey)
	aad := []byte("credential:1")
	blob, err := l.Seal(ctx, []byte("secret value"), aad)
	if err != nil {
		t.Fatal(err)
	}
	with := func(f func(b []byte) []byte) []byte { return f(bytes.Clone(blob)) }

	tests := []struct {
		name   string
		opener *Local
		blob   []byte
		aad    []byte
		want   error
	}{
		{"wrong aad", l, blob, []byte("credential:2"), ErrAuthentication},
		{"missing aad", l, blob, nil, ErrAuthentication},
		{"aad with extra byte", l, blob, append(bytes.Clone(aad), 0), ErrAuthentication},
		{"wrong master key", newTestLocal(t, testMasterKey2), blob, aad, ErrWrongKey},
		{"key id altered", l, with(func(b []byte) []byte { b[2] ^= 1; return b }), aad, ErrWrongKey},
		{"unknown version 0", l, with(func(b []byte) []byte { b[0] = 0; return b }), aad, ErrMalformed},
		{"unknown version 2", l, with(func(b []byte) []byte { b[0] = 2; return b }), aad, ErrMalformed},
		{"unknown kind 0", l, with(func(b []byte) []byte { b[1] = 0; return b }), aad, ErrMalformed},
		{"unknown kind 3", l, with(func(b []byte) []byte { b[1] = 3; return b }), aad, ErrMalformed},
		{"empty", l, nil, aad, ErrMalformed},
		{"version only", l, blob[:1], aad, ErrMalformed},
		{"header only", l, blob[:10], aad, ErrMalformed},
		{"no tag", l, blob[:len(blob)-tagLen], aad, ErrMalformed},
		{"one byte short", l, blob[:len(blob)-1], aad, ErrAuthentication},
		{"one byte long", l, append(bytes.Clone(blob), 0), aad, ErrAuthentication},
		{"kms kind", l, kmsShapedBlob(), aad, ErrNotConfigured},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := tt.opener.Open(ctx, tt.blob, tt.aad)
			if !errors.Is(err, tt.want) {
				t.Fatalf("Open error = %v, want %v", err, tt.want)
			}
			if got != nil {
				t.Fatalf("Open returned %q with an error", got)
			}
		})
	}
}

// kmsShapedBlob returns a structurally valid KMS blob.
func kmsShapedBlob() []byte {
	b := []byte{version1, kindKMS}
	b = appendField(b, []byte("arn:aws:kms:us-east-1:111122223333:key/00000000-0000-0000-0000-000000000000"))
	b = appendField(b, bytes.Repeat([]byte{7}, 100))
	return append(b, make([]byte, gcmExtra+5)...)
}

func TestLocalEveryByteFlipped(t *testing.T) {
	ctx := context.Background()
	l := newTestLocal(t, testMasterKey)
	aad := []byte("credential:1")
	blob, err := l.Seal(ctx, []byte("secret value"), aad)
	if err != nil {
		t.Fatal(err)
	}
	for i := range blob {
		for _, bit := range []byte{0x01, 0x80} {
			b := bytes.Clone(blob)
			b[i] ^= bit
			if got, err := l.Open(ctx, b, aad); err == nil || got != nil {
				t.Fatalf("byte %d ^ %#x: Open = %q, %v; want an error", i, bit, got, err)
			}
		}
	}
}

func TestLocalEveryTruncation(t *testing.T) {
	ctx := context.Background()
	l := newTestLocal(t, testMasterKey)
	blob, _ := l.Seal(ctx, []byte("secret value"), nil)
	for n := 0; n < len(blob); n++ {
		if got, err := l.Open(ctx, blob[:n], nil); err == nil || got != nil {
			t.Fatalf("blob[:%d]: Open = %q, %v; want an error", n, got, err)
		}
	}
}

func TestLocalConcurrent(t *testing.T) {
	ctx := context.Background()
	l := newTestLocal(t, testMasterKey)
	var wg sync.WaitGroup
	for g := 0; g < 8; g++ {
		wg.Go(func() {
			for i := 0; i < 200; i++ {
				pt := []byte(strings.Repeat("k", i))
				blob, err := l.Seal(ctx, pt, []byte("row"))
				if err != nil {
					t.Error(err)
					return
				}
				got, err := l.Open(ctx, blob, []byte("row"))
				if err != nil || !bytes.Equal(got, pt) {
					t.Errorf("Open = %q, %v; want %q", got, err, pt)
					return
				}
			}
		})
	}
	wg.Wait()
}

func TestParseMasterKey(t *testing.T) {
	key := testMasterKey
	hexKey := hex.EncodeToString(key)
	tests := []struct {
		name string
		in   string
		ok   bool
	}{
		{"hex lower", hexKey, true},
		{"hex upper", strings.ToUpper(hexKey), true},
		{"std base64", base64.StdEncoding.EncodeToString(key), true},
		{"std base64 unpadded", base64.RawStdEncoding.EncodeToString(key), true},
		{"url base64", base64.URLEncoding.EncodeToString(key), true},
		{"url base64 unpadded", base64.RawURLEncoding.EncodeToString(key), true},
		{"trailing newline", base64.StdEncoding.EncodeToString(key) + "\n", true},
		{"surrounding spaces", "  " + hexKey + "\t", true},
		{"empty", "", false},
		{"spaces only", "   ", false},
		{"hex 31 bytes", hexKey[:62], false},
		{"hex 33 bytes", hexKey + "00", false},
		{"hex bad digit", "g" + hexKey[1:], false},
		{"base64 31 bytes", base64.StdEncoding.EncodeToString(key[:31]), false},
		{"base64 33 bytes", base64.StdEncoding.EncodeToString(append(bytes.Clone(key), 0)), false},
		{"base64 embedded newline", base64.StdEncoding.EncodeToString(key)[:20] + "\n" + base64.StdEncoding.EncodeToString(key)[20:], false},
		{"base64 embedded space", base64.StdEncoding.EncodeToString(key)[:20] + " " + base64.StdEncoding.EncodeToString(key)[20:], false},
		{"base64 non-canonical trailing bits", base64.RawStdEncoding.EncodeToString(key)[:42] + "9", false},
		{"passphrase", "correct horse battery staple!!!!", false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := ParseMasterKey(tt.in)
			if !tt.ok {
				if err == nil {
					t.Fatalf("ParseMasterKey accepted %q", tt.in)
				}
				if s := strings.TrimSpace(tt.in); len(s) > 4 && strings.Contains(err.Error(), s) {
					t.Fatalf("error %q echoes the input", err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if !bytes.Equal(got, key) {
				t.Fatalf("ParseMasterKey = %x, want %x", got, key)
			}
		})
	}
}

func TestNewLocalMode(t *testing.T) {
	ctx := context.Background()
	s, err := New(ctx, Options{MasterKey: testMasterKey})
	if err != nil {
		t.Fatal(err)
	}
	if _, ok := s.(*Local); !ok {
		t.Fatalf("New = %T, want *Local", s)
	}
	blob, err := s.Seal(ctx, []byte("v"), []byte("a"))
	if err != nil {
		t.Fatal(err)
	}
	if got, err := newTestLocal(t, testMasterKey).Open(ctx, blob, []byte("a")); err != nil || string(got) != "v" {
		t.Fatalf("Open = %q, %v", got, err)
	}
}

func TestNewErrors(t *testing.T) {
	tests := []struct {
		name string
		opts Options
		want string
	}{
		{"nothing configured", Options{}, "neither a KMS key id nor a master key is configured"},
		{"short master key", Options{MasterKey: make([]byte, 16)}, "master key is 16 bytes, want 32"},
		{"short master key with KMS", Options{MasterKey: make([]byte, 31), KMSKeyID: "alias/x"}, "master key is 31 bytes, want 32"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s, err := New(context.Background(), tt.opts)
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("New = %v, %v; want error containing %q", s, err, tt.want)
			}
		})
	}
}

func BenchmarkLocalSeal(b *testing.B) {
	ctx := context.Background()
	l := newTestLocal(b, testMasterKey)
	pt := bytes.Repeat([]byte("k"), 128)
	b.ReportAllocs()
	for b.Loop() {
		if _, err := l.Seal(ctx, pt, []byte("credential:1")); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkLocalOpen(b *testing.B) {
	ctx := context.Background()
	l := newTestLocal(b, testMasterKey)
	blob, _ := l.Seal(ctx, bytes.Repeat([]byte("k"), 128), []byte("credential:1"))
	b.ReportAllocs()
	for b.Loop() {
		if _, err := l.Open(ctx, blob, []byte("credential:1")); err != nil {
			b.Fatal(err)
		}
	}
}

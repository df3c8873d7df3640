package secrets

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/ccproxy/ccproxy/internal/testenv/localkms"
)

func testContext(t testing.TB) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	t.Cleanup(cancel)
	return ctx
}

// blobARN returns the key ARN recorded in a KMS blob.
func blobARN(t testing.TB, blob []byte) string {
	t.Helper()
	h, err := parseBlob(blob)
	if err != nil {
		t.Fatal(err)
	}
	if h.kind != kindKMS {
		t.Fatalf("blob kind = %d, want KMS", h.kind)
	}
	return h.keyARN
}

func TestKMSRoundTrip(t *testing.T) {
	ctx := testContext(t)
	srv := localkms.Start(t)
	client := srv.Client()
	a := srv.Keys[0]
	aliasARN := "arn:aws:kms:" + localkms.Region + ":" + localkms.AccountID + ":" + localkms.Alias

	tests := []struct {
		name           string
		sealID, openID string
		plaintext, aad []byte
	}{
		{"key id", a.ID, a.ID, []byte("ABSKQmVkcm9ja0FQSUtleS1leGFtcGxl"), []byte("credential:1")},
		{"key ARN, opened by id", a.ARN, a.ID, []byte("secret"), []byte("credential:2")},
		{"alias, opened by ARN", localkms.Alias, a.ARN, []byte("secret"), []byte("c")},
		{"alias ARN, opened by alias", aliasARN, localkms.Alias, []byte("secret"), []byte("c")},
		{"empty plaintext and aad", a.ID, a.ID, nil, nil},
		{"large plaintext", a.ID, a.ID, bytes.Repeat([]byte{0xab}, 1<<16), []byte("x")},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			blob, err := NewKMS(client, tt.sealID).Seal(ctx, tt.plaintext, tt.aad)
			if err != nil {
				t.Fatal(err)
			}
			if blob[0] != version1 || blob[1] != kindKMS {
				t.Fatalf("blob starts %x, want 01 02", blob[:2])
			}
			if got := blobARN(t, blob); got != a.ARN {
				t.Fatalf("blob names key %q, want %q", got, a.ARN)
			}
			if len(tt.plaintext) > 4 && bytes.Contains(blob, tt.plaintext) {
				t.Fatal("blob contains the plaintext")
			}
			got, err := NewKMS(client, tt.openID).Open(ctx, blob, tt.aad)
			if err != nil {
				t.Fatal(err)
			}
			if !bytes.Equal(got, tt.plaintext) {
				t.Fatalf("Open = %q, want %q", got, tt.plaintext)
			}
		})
	}
}

func TestKMSOpenRejects(t *testing.T) {
	ctx := testContext(t)
	srv := localkms.Start(t)
	client := srv.Client()
	a, b := srv.Keys[0], srv.Keys[1]
	sealerA := NewKMS(client, a.ID)
	aad := []byte("credential:1")
	blob, err := sealerA.Seal(ctx, []byte("secret value"), aad)
	if err != nil {
		t.Fatal(err)
	}
	blobB, err := NewKMS(client, b.ID).Seal(ctx, []byte("secret value"), aad)
	if err != nil {
		t.Fatal(err)
	}
	localBlob, err := newTestLocal(t, testMasterKey).Seal(ctx, []byte("local value"), aad)
	if err != nil {
		t.Fatal(err)
	}
	// ARNs of keys on one server have the same length, so the blob's ARN
	// can be rewritten in place to pass the sealer's own check.
	rewritten := bytes.Replace(blob, []byte(a.ARN), []byte(b.ARN), 1)
	if bytes.Equal(rewritten, blob) || len(a.ARN) != len(b.ARN) {
		t.Fatal("could not rewrite the ARN in the blob")
	}
	truncatedKey := bytes.Clone(blob)
	binary.BigEndian.PutUint16(truncatedKey[4+len(a.ARN):], 5000)

	tests := []struct {
		name   string
		opener Sealer
		blob   []byte
		aad    []byte
		want   []error // Open's error wraps one of these
	}{
		{"wrong aad", sealerA, blob, []byte("credential:2"), []error{ErrAuthentication}},
		{"missing aad", sealerA, blob, nil, []error{ErrAuthentication}},
		{"wrong key by id", NewKMS(client, b.ID), blob, aad, []error{ErrWrongKey}},
		{"wrong key by ARN", NewKMS(client, b.ARN), blob, aad, []error{ErrWrongKey}},
		// Real KMS answers IncorrectKeyException (ErrWrongKey) when the KeyId
		// given to Decrypt is not the one that encrypted the data key;
		// local-kms tries the named key and answers InvalidCiphertextException.
		{"wrong key behind alias", NewKMS(client, localkms.Alias), blobB, aad, []error{ErrWrongKey, ErrAuthentication}},
		{"ARN rewritten to the opener's key", NewKMS(client, b.ID), rewritten, aad, []error{ErrWrongKey, ErrAuthentication}},
		{"unknown version", sealerA, append([]byte{9}, blob[1:]...), aad, []error{ErrMalformed}},
		{"unknown kind", sealerA, append([]byte{1, 9}, blob[2:]...), aad, []error{ErrMalformed}},
		{"encrypted key length past end", sealerA, truncatedKey, aad, []error{ErrMalformed}},
		{"truncated in ARN", sealerA, blob[:10], aad, []error{ErrMalformed}},
		{"truncated before nonce", sealerA, blob[:len(blob)-gcmExtra-13], aad, []error{ErrMalformed}},
		{"one byte short", sealerA, blob[:len(blob)-1], aad, []error{ErrAuthentication}},
		{"local blob without master key", sealerA, localBlob, aad, []error{ErrNotConfigured}},
		{"local blob with wrong master key", sealerA.WithLocal(newTestLocal(t, testMasterKey2)), localBlob, aad, []error{ErrWrongKey}},
		{"local blob with wrong aad", sealerA.WithLocal(newTestLocal(t, testMasterKey)), localBlob, []byte("x"), []error{ErrAuthentication}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := tt.opener.Open(ctx, tt.blob, tt.aad)
			if err == nil {
				t.Fatalf("Open = %q, want an error", got)
			}
			if got != nil {
				t.Fatalf("Open returned %q with an error", got)
			}
			for _, w := range tt.want {
				if errors.Is(err, w) {
					return
				}
			}
			t.Fatalf("Open error = %v, want one wrapping %v", err, tt.want)
		})
	}
}

func TestKMSWrongKeyMessage(t *testing.T) {
	ctx := testContext(t)
	srv := localkms.Start(t)
	a, b := srv.Keys[0], srv.Keys[1]
	blob, err := NewKMS(srv.Client(), a.ID).Seal(ctx, []byte("v"), nil)
	if err != nil {
		t.Fatal(err)
	}
	_, err = NewKMS(srv.Client(), b.ID).Open(ctx, blob, nil)
	want := "secrets: blob sealed under a different key: blob was sealed under KMS key " + a.ARN + ", the configured key is " + b.ID
	if err == nil || err.Error() != want {
		t.Fatalf("Open error = %v, want %q", err, want)
	}
}

func TestKMSEveryByteFlipped(t *testing.T) {
	ctx := testContext(t)
	srv := localkms.Start(t)
	k := NewKMS(srv.Client(), srv.Keys[0].ID)
	aad := []byte("credential:1")
	blob, err := k.Seal(ctx, []byte("secret value"), aad)
	if err != nil {
		t.Fatal(err)
	}
	for i := range blob {
		b := bytes.Clone(blob)
		b[i] ^= 0x01
		if got, err := k.Open(ctx, b, aad); err == nil || got != nil {
			t.Fatalf("byte %d flipped: Open = %q, %v; want an error", i, got, err)
		}
	}
}

func TestKMSOpensLocalBlobsWithMasterKey(t *testing.T) {
	ctx := testContext(t)
	srv := localkms.Start(t)
	local := newTestLocal(t, testMasterKey)
	k := NewKMS(srv.Client(), srv.Keys[0].ID).WithLocal(local)
	old, err := local.Seal(ctx, []byte("sealed before KMS"), []byte("row"))
	if err != nil {
		t.Fatal(err)
	}
	if got, err := k.Open(ctx, old, []byte("row")); err != nil || string(got) != "sealed before KMS" {
		t.Fatalf("Open(local blob) = %q, %v", got, err)
	}
	fresh, err := k.Seal(ctx, []byte("new"), []byte("row"))
	if err != nil {
		t.Fatal(err)
	}
	if fresh[1] != kindKMS {
		t.Fatalf("KMS sealer with a master key sealed kind %d, want KMS", fresh[1])
	}
	// The master key alone cannot open what KMS sealed.
	_, err = local.Open(ctx, fresh, []byte("row"))
	if !errors.Is(err, ErrNotConfigured) || !strings.Contains(err.Error(), srv.Keys[0].ARN) {
		t.Fatalf("Local.Open(KMS blob) error = %v, want ErrNotConfigured naming %s", err, srv.Keys[0].ARN)
	}
}

func TestKMSSealUnknownKey(t *testing.T) {
	ctx := testContext(t)
	srv := localkms.Start(t)
	_, err := NewKMS(srv.Client(), "00000000-0000-0000-0000-000000000000").Seal(ctx, []byte("v"), nil)
	if err == nil || !strings.Contains(err.Error(), "KMS GenerateDataKey with key 00000000-0000-0000-0000-000000000000") {
		t.Fatalf("Seal error = %v, want a GenerateDataKey error naming the key", err)
	}
}

func TestNewKMSMode(t *testing.T) {
	srv := localkms.Start(t)
	srv.SetAWSEnv(t)
	ctx := testContext(t)
	a := srv.Keys[0]
	oldLocal, err := newTestLocal(t, testMasterKey).Seal(ctx, []byte("legacy"), []byte("r"))
	if err != nil {
		t.Fatal(err)
	}

	tests := []struct {
		name      string
		opts      Options
		noRegion  bool
		opensOld  bool
		wantError string
	}{
		{"key id", Options{KMSKeyID: a.ID, KMSEndpoint: srv.Endpoint}, false, false, ""},
		{"with master key", Options{KMSKeyID: a.ID, KMSEndpoint: srv.Endpoint, MasterKey: testMasterKey}, false, true, ""},
		{"region option", Options{KMSKeyID: a.ID, KMSEndpoint: srv.Endpoint, AWSRegion: "eu-west-1"}, true, false, ""},
		{"region from key ARN", Options{KMSKeyID: a.ARN, KMSEndpoint: srv.Endpoint}, true, false, ""},
		{"no region", Options{KMSKeyID: a.ID, KMSEndpoint: srv.Endpoint}, true, false,
			"secrets: KMS key id " + a.ID + " is set but no AWS region is configured; set the AWS region"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if tt.noRegion {
				t.Setenv("AWS_REGION", "")
				t.Setenv("AWS_DEFAULT_REGION", "")
			}
			s, err := New(ctx, tt.opts)
			if tt.wantError != "" {
				if err == nil || err.Error() != tt.wantError {
					t.Fatalf("New error = %v, want %q", err, tt.wantError)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if _, ok := s.(*KMS); !ok {
				t.Fatalf("New = %T, want *KMS", s)
			}
			blob, err := s.Seal(ctx, []byte("bedrock key"), []byte("r"))
			if err != nil {
				t.Fatal(err)
			}
			if got := blobARN(t, blob); got != a.ARN {
				t.Fatalf("blob names %q, want %q", got, a.ARN)
			}
			if got, err := s.Open(ctx, blob, []byte("r")); err != nil || string(got) != "bedrock key" {
				t.Fatalf("Open = %q, %v", got, err)
			}
			got, err := s.Open(ctx, oldLocal, []byte("r"))
			if tt.opensOld {
				if err != nil || string(got) != "legacy" {
					t.Fatalf("Open(local blob) = %q, %v", got, err)
				}
			} else if !errors.Is(err, ErrNotConfigured) {
				t.Fatalf("Open(local blob) error = %v, want ErrNotConfigured", err)
			}
		})
	}
}

func BenchmarkKMSSeal(b *testing.B) {
	ctx := testContext(b)
	srv := localkms.Start(b)
	k := NewKMS(srv.Client(), srv.Keys[0].ID)
	pt := bytes.Repeat([]byte("k"), 128)
	b.ReportAllocs()
	for b.Loop() {
		if _, err := k.Seal(ctx, pt, []byte("credential:1")); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkKMSOpen(b *testing.B) {
	ctx := testContext(b)
	srv := localkms.Start(b)
	k := NewKMS(srv.Client(), srv.Keys[0].ID)
	blob, err := k.Seal(ctx, bytes.Repeat([]byte("k"), 128), []byte("credential:1"))
	if err != nil {
		b.Fatal(err)
	}
	b.ReportAllocs()
	for b.Loop() {
		if _, err := k.Open(ctx, blob, []byte("credential:1")); err != nil {
			b.Fatal(err)
		}
	}
}

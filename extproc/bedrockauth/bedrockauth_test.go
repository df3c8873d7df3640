package bedrockauth

import (
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/ccproxy/ccproxy/admin"
	"github.com/ccproxy/ccproxy/internal/secrets"
	"github.com/ccproxy/ccproxy/internal/testenv/parked"
)

// countingSealer counts Opens and can hold them until release is closed.
type countingSealer struct {
	secrets.Sealer
	opens   atomic.Int64
	release chan struct{} // nil: don't block
}

func (c *countingSealer) Open(ctx context.Context, blob, aad []byte) ([]byte, error) {
	c.opens.Add(1)
	if c.release != nil {
		<-c.release
	}
	return c.Sealer.Open(ctx, blob, aad)
}

func newLocal(t testing.TB) *secrets.Local {
	t.Helper()
	l, err := secrets.NewLocal(make([]byte, secrets.MasterKeyLen))
	if err != nil {
		t.Fatal(err)
	}
	return l
}

// seal seals key the way the admin service does.
func seal(t testing.TB, s secrets.Sealer, user uuid.UUID, key string) []byte {
	t.Helper()
	blob, err := s.Seal(context.Background(), []byte(key), admin.CredentialAAD(user))
	if err != nil {
		t.Fatal(err)
	}
	return blob
}

type clock struct {
	mu sync.Mutex
	t  time.Time
}

func (c *clock) now() time.Time      { c.mu.Lock(); defer c.mu.Unlock(); return c.t }
func (c *clock) add(d time.Duration) { c.mu.Lock(); c.t = c.t.Add(d); c.mu.Unlock() }

const (
	testHost = "bedrock-runtime.us-east-1.amazonaws.com"
	testPath = "/model/us.anthropic.claude-opus-5-5/invoke-with-response-stream"
)

func TestCredentialAADMatchesAdmin(t *testing.T) {
	for _, u := range []uuid.UUID{uuid.Nil, uuid.MustParse("0b7d2f4e-8a51-4c6e-9d3a-2f1e0c9b8a77")} {
		if got, want := string(CredentialAAD(u)), string(admin.CredentialAAD(u)); got != want {
			t.Errorf("CredentialAAD(%s) = %q, admin has %q", u, got, want)
		}
	}
}

func TestSignAPIKey(t *testing.T) {
	local := newLocal(t)
	user := uuid.MustParse("0b7d2f4e-8a51-4c6e-9d3a-2f1e0c9b8a77")
	other := uuid.MustParse("11111111-2222-4333-8444-555555555555")
	id := uuid.MustParse("aaaaaaaa-bbbb-4ccc-8ddd-eeeeeeeeeeee")
	good := seal(t, local, user, "ABSKexample-bedrock-key")
	tampered := append([]byte(nil), good...)
	tampered[len(tampered)-1] ^= 1

	tests := []struct {
		name    string
		cred    Credential
		want    []Header
		wantErr error
	}{
		{
			name: "decrypts and sets bearer",
			cred: Credential{ID: id, UserID: user, Kind: KindAPIKey, Region: "us-east-1", SecretCiphertext: good},
			want: []Header{{Name: "authorization", Value: "Bearer ABSKexample-bedrock-key"}},
		},
		{
			name:    "wrong user (AAD) fails",
			cred:    Credential{ID: id, UserID: other, Kind: KindAPIKey, Region: "us-east-1", SecretCiphertext: good},
			wantErr: secrets.ErrAuthentication,
		},
		{
			name:    "tampered blob fails",
			cred:    Credential{ID: id, UserID: user, Kind: KindAPIKey, Region: "us-east-1", SecretCiphertext: tampered},
			wantErr: ErrDecrypt,
		},
		{
			name:    "no secret",
			cred:    Credential{ID: id, UserID: user, Kind: KindAPIKey, Region: "us-east-1"},
			wantErr: ErrInvalidCredential,
		},
		{
			name:    "unknown kind",
			cred:    Credential{ID: id, UserID: user, Kind: "iam_role", Region: "us-east-1"},
			wantErr: ErrUnknownKind,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s := New(Config{Sealer: local})
			got, err := s.Sign(context.Background(), tt.cred, "POST", testHost, testPath, []byte("{}"))
			if tt.wantErr != nil {
				if !errors.Is(err, tt.wantErr) {
					t.Fatalf("Sign error = %v, want %v", err, tt.wantErr)
				}
				if strings.Contains(err.Error(), "ABSK") {
					t.Fatalf("error leaks the key: %v", err)
				}
				if cerr := s.Check(context.Background(), tt.cred); !errors.Is(cerr, tt.wantErr) {
					t.Fatalf("Check error = %v, want %v", cerr, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if fmt.Sprint(got) != fmt.Sprint(tt.want) {
				t.Fatalf("Sign = %v, want %v", got, tt.want)
			}
		})
	}
}

func TestAPIKeyCache(t *testing.T) {
	user := uuid.MustParse("0b7d2f4e-8a51-4c6e-9d3a-2f1e0c9b8a77")
	id := uuid.MustParse("aaaaaaaa-bbbb-4ccc-8ddd-eeeeeeeeeeee")
	ctx := context.Background()

	t.Run("hit, changed blob, expiry", func(t *testing.T) {
		cs := &countingSealer{Sealer: newLocal(t)}
		clk := &clock{t: time.Date(2026, 11, 26, 0, 0, 0, 0, time.UTC)}
		s := New(Config{Sealer: cs, KeyTTL: time.Minute, Now: clk.now})
		cred := Credential{ID: id, UserID: user, Kind: KindAPIKey, SecretCiphertext: seal(t, cs, user, "key-one")}
		steps := []struct {
			name      string
			do        func()
			want      string
			wantOpens int64
		}{
			{"first", func() {}, "Bearer key-one", 1},
			{"cached", func() {}, "Bearer key-one", 1},
			{"still cached before TTL", func() { clk.add(59 * time.Second) }, "Bearer key-one", 1},
			{"secret changed", func() { cred.SecretCiphertext = seal(t, cs, user, "key-two") }, "Bearer key-two", 2},
			{"changed secret cached", func() {}, "Bearer key-two", 2},
			{"expired", func() { clk.add(61 * time.Second) }, "Bearer key-two", 3},
		}
		for _, st := range steps {
			st.do()
			hs, err := s.Sign(ctx, cred, "POST", testHost, testPath, nil)
			if err != nil {
				t.Fatalf("%s: %v", st.name, err)
			}
			if len(hs) != 1 || hs[0].Value != st.want {
				t.Fatalf("%s: got %v, want %q", st.name, hs, st.want)
			}
			if n := cs.opens.Load(); n != st.wantOpens {
				t.Fatalf("%s: %d opens, want %d", st.name, n, st.wantOpens)
			}
		}
	})

	t.Run("failures are not cached", func(t *testing.T) {
		cs := &countingSealer{Sealer: newLocal(t)}
		s := New(Config{Sealer: cs})
		cred := Credential{ID: id, UserID: uuid.New(), Kind: KindAPIKey, SecretCiphertext: seal(t, cs, user, "k")}
		for i := range 2 {
			if _, err := s.Sign(ctx, cred, "POST", testHost, testPath, nil); !errors.Is(err, ErrDecrypt) {
				t.Fatalf("attempt %d: err = %v", i, err)
			}
		}
		if n := cs.opens.Load(); n != 2 {
			t.Fatalf("%d opens, want 2", n)
		}
	})

	t.Run("single flight", func(t *testing.T) {
		cs := &countingSealer{Sealer: newLocal(t), release: make(chan struct{})}
		s := New(Config{Sealer: cs})
		cred := Credential{ID: id, UserID: user, Kind: KindAPIKey, SecretCiphertext: seal(t, cs, user, "shared")}
		const n = 32
		var wg sync.WaitGroup
		errs := make(chan error, n)
		for range n {
			wg.Go(func() {
				hs, err := s.Sign(ctx, cred, "POST", testHost, testPath, nil)
				if err == nil && hs[0].Value != "Bearer shared" {
					err = fmt.Errorf("got %v", hs)
				}
				errs <- err
			})
		}
		// One caller decrypts (held at the release), the other 31 wait for
		// it; had any of them started another decryption, opens would
		// count it.
		parked.Wait(t, 1, "chan receive", "github.com/ccproxy/ccproxy/extproc/bedrockauth.(*countingSealer).Open")
		parked.Wait(t, n-1, "select", "github.com/ccproxy/ccproxy/extproc/bedrockauth.(*Signer).apiKeyHeader")
		close(cs.release)
		wg.Wait()
		close(errs)
		for err := range errs {
			if err != nil {
				t.Fatal(err)
			}
		}
		if got := cs.opens.Load(); got != 1 {
			t.Fatalf("%d opens, want 1", got)
		}
	})

	t.Run("waiter honours its context", func(t *testing.T) {
		cs := &countingSealer{Sealer: newLocal(t), release: make(chan struct{})}
		s := New(Config{Sealer: cs})
		cred := Credential{ID: id, UserID: user, Kind: KindAPIKey, SecretCiphertext: seal(t, cs, user, "slow")}
		done := make(chan struct{})
		go func() { defer close(done); _, _ = s.Sign(ctx, cred, "POST", testHost, testPath, nil) }()
		for cs.opens.Load() == 0 {
			time.Sleep(time.Millisecond)
		}
		cctx, cancel := context.WithCancel(ctx)
		cancel()
		if _, err := s.Sign(cctx, cred, "POST", testHost, testPath, nil); !errors.Is(err, context.Canceled) {
			t.Fatalf("err = %v, want context.Canceled", err)
		}
		close(cs.release)
		<-done
	})

	t.Run("bounded", func(t *testing.T) {
		local := newLocal(t)
		s := New(Config{Sealer: local, MaxKeys: 3})
		for i := range 10 {
			u := uuid.New()
			cred := Credential{ID: uuid.New(), UserID: u, Kind: KindAPIKey, SecretCiphertext: seal(t, local, u, fmt.Sprint("k", i))}
			hs, err := s.Sign(ctx, cred, "POST", testHost, testPath, nil)
			if err != nil || hs[0].Value != fmt.Sprint("Bearer k", i) {
				t.Fatalf("key %d: %v %v", i, hs, err)
			}
			s.mu.Lock()
			n := len(s.keys)
			s.mu.Unlock()
			if n > 3 {
				t.Fatalf("after %d keys the cache holds %d, max 3", i+1, n)
			}
		}
	})
}

// awsEnv points the default chain at static credentials in the environment
// and nothing else.
func awsEnv(t *testing.T, sessionToken string) {
	dir := t.TempDir()
	for _, f := range []string{"config", "credentials"} {
		if err := os.WriteFile(filepath.Join(dir, f), nil, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	t.Setenv("AWS_CONFIG_FILE", filepath.Join(dir, "config"))
	t.Setenv("AWS_SHARED_CREDENTIALS_FILE", filepath.Join(dir, "credentials"))
	t.Setenv("AWS_EC2_METADATA_DISABLED", "true")
	t.Setenv("AWS_PROFILE", "")
	t.Setenv("AWS_REGION", "")
	t.Setenv("AWS_ROLE_ARN", "")
	t.Setenv("AWS_WEB_IDENTITY_TOKEN_FILE", "")
	t.Setenv("AWS_CONTAINER_CREDENTIALS_FULL_URI", "")
	t.Setenv("AWS_CONTAINER_CREDENTIALS_RELATIVE_URI", "")
	t.Setenv("AWS_ACCESS_KEY_ID", "AKIDEXAMPLE")
	t.Setenv("AWS_SECRET_ACCESS_KEY", "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY")
	t.Setenv("AWS_SESSION_TOKEN", sessionToken)
}

// uriEncode is SigV4's UriEncode: every byte but the unreserved characters
// as %XX in upper case.
func uriEncode(s string) string {
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		c := s[i]
		if 'A' <= c && c <= 'Z' || 'a' <= c && c <= 'z' || '0' <= c && c <= '9' || strings.IndexByte("-_.~", c) >= 0 {
			b.WriteByte(c)
		} else {
			fmt.Fprintf(&b, "%%%02X", c)
		}
	}
	return b.String()
}

func hmacSHA256(key []byte, data string) []byte {
	m := hmac.New(sha256.New, key)
	m.Write([]byte(data))
	return m.Sum(nil)
}

func hexSHA256(data []byte) string {
	s := sha256.Sum256(data)
	return hex.EncodeToString(s[:])
}

// referenceSigV4 computes the headers of a SigV4-signed request by hand from
// the AWS specification (IAM user guide, "Create a signed AWS API request"),
// for a service other than S3: every path segment of the wire path is
// URI-encoded again in the canonical request.
func referenceSigV4(method, host, wirePath, query string, body []byte, akid, secret, token, region string, at time.Time) (canonical string, headers []Header) {
	amzDate := at.UTC().Format("20060102T150405Z")
	day := amzDate[:8]

	segs := strings.Split(wirePath, "/")
	for i, s := range segs {
		segs[i] = uriEncode(s)
	}
	canonicalURI := strings.Join(segs, "/")

	var pairs []string
	if query != "" {
		for _, kv := range strings.Split(query, "&") {
			k, v, _ := strings.Cut(kv, "=")
			pairs = append(pairs, uriEncode(k)+"="+uriEncode(v))
		}
		sort.Strings(pairs)
	}

	hdrs := map[string]string{"host": host, "x-amz-date": amzDate}
	if token != "" {
		hdrs["x-amz-security-token"] = token
	}
	var names []string
	for n := range hdrs {
		names = append(names, n)
	}
	sort.Strings(names)
	var ch strings.Builder
	for _, n := range names {
		ch.WriteString(n + ":" + strings.TrimSpace(hdrs[n]) + "\n")
	}
	signed := strings.Join(names, ";")

	canonical = strings.Join([]string{method, canonicalURI, strings.Join(pairs, "&"), ch.String(), signed, hexSHA256(body)}, "\n")
	scope := day + "/" + region + "/bedrock/aws4_request"
	toSign := "AWS4-HMAC-SHA256\n" + amzDate + "\n" + scope + "\n" + hexSHA256([]byte(canonical))
	k := hmacSHA256([]byte("AWS4"+secret), day)
	k = hmacSHA256(k, region)
	k = hmacSHA256(k, "bedrock")
	k = hmacSHA256(k, "aws4_request")
	sig := hex.EncodeToString(hmacSHA256(k, toSign))

	headers = []Header{
		{Name: "authorization", Value: "AWS4-HMAC-SHA256 Credential=" + akid + "/" + scope + ", SignedHeaders=" + signed + ", Signature=" + sig},
		{Name: "x-amz-date", Value: amzDate},
	}
	if token != "" {
		headers = append(headers, Header{Name: "x-amz-security-token", Value: token})
	}
	return canonical, headers
}

func TestSignSigV4(t *testing.T) {
	at := time.Date(2026, 11, 26, 7, 23, 36, 0, time.UTC)
	body := []byte(`{"anthropic_version":"bedrock-2023-05-31","max_tokens":32000,"messages":[{"role":"user","content":"hi"}]}`)
	tests := []struct {
		name, token, region, host, path string
		wantCanonicalURI                string
	}{
		{
			name: "session credentials, inference profile", token: "IQoJb3JpZ2luX2VjEXAMPLETOKEN//////////wEaCXVzLWVhc3QtMSJH",
			region: "us-east-1", host: testHost, path: testPath,
			wantCanonicalURI: testPath,
		},
		{
			name: "long-term credentials, escaped colon", region: "eu-west-1",
			host:             "bedrock-runtime.eu-west-1.amazonaws.com",
			path:             "/model/eu.anthropic.claude-sonnet-4-5-20250929-v1%3A0/invoke",
			wantCanonicalURI: "/model/eu.anthropic.claude-sonnet-4-5-20250929-v1%253A0/invoke",
		},
		{
			name: "count tokens with query", token: "tok", region: "us-west-2",
			host:             "bedrock-runtime.us-west-2.amazonaws.com",
			path:             "/model/anthropic.claude-opus-4-1-20250805-v1%3A0/count-tokens?b=2&a=x%3Ay",
			wantCanonicalURI: "/model/anthropic.claude-opus-4-1-20250805-v1%253A0/count-tokens",
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			awsEnv(t, tt.token)
			s := New(Config{Now: func() time.Time { return at }})
			cred := Credential{ID: uuid.New(), UserID: uuid.New(), Kind: KindAWSDefaultChain, Region: tt.region}
			if err := s.Check(context.Background(), cred); err != nil {
				t.Fatal(err)
			}
			got, err := s.Sign(context.Background(), cred, "POST", tt.host, tt.path, body)
			if err != nil {
				t.Fatal(err)
			}
			p, q, _ := strings.Cut(tt.path, "?")
			unescQ := strings.ReplaceAll(q, "%3A", ":") // the query as its decoded values
			canonical, want := referenceSigV4("POST", tt.host, p, unescQ, body,
				"AKIDEXAMPLE", "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY", tt.token, tt.region, at)
			if line := strings.Split(canonical, "\n")[1]; line != tt.wantCanonicalURI {
				t.Fatalf("reference canonical URI = %q, want %q", line, tt.wantCanonicalURI)
			}
			if fmt.Sprintf("%q", got) != fmt.Sprintf("%q", want) {
				t.Fatalf("Sign =\n%q\nreference =\n%q\ncanonical request:\n%s", got, want, canonical)
			}
		})
	}
}

func TestSignSigV4Errors(t *testing.T) {
	awsEnv(t, "")
	s := New(Config{})
	ctx := context.Background()
	tests := []struct {
		name       string
		cred       Credential
		host, path string
		wantErr    error
	}{
		{"no region", Credential{Kind: KindAWSDefaultChain}, testHost, testPath, ErrInvalidCredential},
		{"relative path", Credential{Kind: KindAWSDefaultChain, Region: "us-east-1"}, testHost, "model/x/invoke", ErrInvalidPath},
		{"no host", Credential{Kind: KindAWSDefaultChain, Region: "us-east-1"}, "", testPath, ErrInvalidPath},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if _, err := s.Sign(ctx, tt.cred, "POST", tt.host, tt.path, nil); !errors.Is(err, tt.wantErr) {
				t.Fatalf("err = %v, want %v", err, tt.wantErr)
			}
		})
	}

	t.Run("empty chain", func(t *testing.T) {
		t.Setenv("AWS_ACCESS_KEY_ID", "")
		t.Setenv("AWS_SECRET_ACCESS_KEY", "")
		s := New(Config{})
		cred := Credential{Kind: KindAWSDefaultChain, Region: "us-east-1"}
		if _, err := s.Sign(ctx, cred, "POST", testHost, testPath, nil); !errors.Is(err, ErrAWSCredentials) {
			t.Fatalf("err = %v, want ErrAWSCredentials", err)
		}
	})
}

func BenchmarkSign(b *testing.B) {
	body := make([]byte, 48<<10)
	for i := range body {
		body[i] = 'a' + byte(i%26)
	}
	ctx := context.Background()

	b.Run("api_key", func(b *testing.B) {
		local := newLocal(b)
		user := uuid.New()
		s := New(Config{Sealer: local})
		cred := Credential{ID: uuid.New(), UserID: user, Kind: KindAPIKey, Region: "us-east-1", SecretCiphertext: seal(b, local, user, "ABSKexample-bedrock-key")}
		b.ReportAllocs()
		b.RunParallel(func(pb *testing.PB) {
			for pb.Next() {
				if _, err := s.Sign(ctx, cred, "POST", testHost, testPath, body); err != nil {
					b.Fatal(err)
				}
			}
		})
	})

	for _, size := range []int{0, len(body)} {
		b.Run(fmt.Sprintf("aws_default_chain/body=%d", size), func(b *testing.B) {
			dir := b.TempDir()
			for k, v := range map[string]string{
				"AWS_CONFIG_FILE": filepath.Join(dir, "none"), "AWS_SHARED_CREDENTIALS_FILE": filepath.Join(dir, "none"),
				"AWS_EC2_METADATA_DISABLED": "true", "AWS_ACCESS_KEY_ID": "AKIDEXAMPLE",
				"AWS_SECRET_ACCESS_KEY": "secret", "AWS_SESSION_TOKEN": "token",
			} {
				b.Setenv(k, v)
			}
			s := New(Config{})
			cred := Credential{ID: uuid.New(), Kind: KindAWSDefaultChain, Region: "us-east-1"}
			b.SetBytes(int64(size))
			b.ReportAllocs()
			b.RunParallel(func(pb *testing.PB) {
				for pb.Next() {
					if _, err := s.Sign(ctx, cred, "POST", testHost, testPath, body[:size]); err != nil {
						b.Fatal(err)
					}
				}
			})
		})
	}
}

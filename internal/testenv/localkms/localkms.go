// Package localkms runs local-kms (github.com/nsmithuk/local-kms), a Go
// implementation of the AWS KMS API, so tests exercise the real aws-sdk-go-v2
// KMS client against a real server instead of a mock.
//
// The binary is taken from $CCPROXY_LOCAL_KMS when set; otherwise it is built
// once from the repository's tool module (tools/go.mod) into the user cache
// directory, under a name derived from that module's go.mod and go.sum so a
// version bump rebuilds it.
package localkms

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"sync"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/credentials"
	"github.com/aws/aws-sdk-go-v2/service/kms"
	"github.com/aws/aws-sdk-go-v2/service/kms/types"
)

const (
	// Region is the AWS region the server puts in key ARNs.
	Region = "us-east-1"
	// AccountID is the AWS account the server puts in key ARNs.
	AccountID = "111122223333"
	// Alias names the first key Start creates.
	Alias = "alias/ccproxy-test"
	// AccessKeyID and SecretAccessKey are the fake static credentials that
	// clients sign with; local-kms does not check signatures.
	AccessKeyID     = "AKIALOCALKMSTEST0000"
	SecretAccessKey = "localkms-test-secret-access-key-not-real"
	// BinaryEnv names the environment variable holding a prebuilt binary.
	BinaryEnv = "CCPROXY_LOCAL_KMS"
	// module is the package path built from the tool module.
	module = "github.com/nsmithuk/local-kms"
)

// startTimeout bounds how long Start waits for the server to listen and answer.
const startTimeout = 60 * time.Second

// Key identifies a symmetric KMS key on the server.
type Key struct {
	ID  string // bare key id (a UUID)
	ARN string // arn:aws:kms:<Region>:<AccountID>:key/<ID>
}

// Server is a running local-kms process, stopped when the test that started
// it ends.
type Server struct {
	// Endpoint is the server's base URL, for the KMS client's BaseEndpoint.
	Endpoint string
	// Keys holds the two symmetric ENCRYPT_DECRYPT keys Start created; Alias
	// points at Keys[0].
	Keys []Key
}

// Start builds or finds local-kms, runs it on a free loopback port with its
// data in a temporary directory, creates two symmetric keys and Alias, and
// stops it when tb's test ends. It fails tb on any error.
func Start(tb testing.TB) *Server {
	tb.Helper()
	bin := Binary(tb)

	dir := tb.TempDir()
	cmd := exec.Command(bin)
	cmd.Env = append(os.Environ(),
		"PORT=0", // local-kms logs the port it bound; see portPattern
		"KMS_ACCOUNT_ID="+AccountID,
		"KMS_REGION="+Region,
		"KMS_DATA_PATH="+filepath.Join(dir, "data"),
		// A path that does not exist, so the default /init/seed.yaml is never read.
		"KMS_SEED_PATH="+filepath.Join(dir, "no-seed.yaml"),
	)
	logs := newLogWatcher()
	cmd.Stdout = logs
	cmd.Stderr = logs
	setProcAttr(cmd)
	if err := cmd.Start(); err != nil {
		tb.Fatalf("localkms: start %s: %v", bin, err)
	}
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()
	tb.Cleanup(func() {
		_ = cmd.Process.Kill()
		<-exited
	})

	var port string
	select {
	case port = <-logs.port:
	case err := <-exited:
		exited <- err // let Cleanup's receive complete
		tb.Fatalf("localkms: exited before listening (%v); output:\n%s", err, logs.String())
	case <-time.After(startTimeout):
		tb.Fatalf("localkms: not listening after %v; output:\n%s", startTimeout, logs.String())
	}

	s := &Server{Endpoint: "http://127.0.0.1:" + port}
	ctx, cancel := context.WithTimeout(context.Background(), startTimeout)
	defer cancel()
	if err := s.waitReady(ctx); err != nil {
		tb.Fatalf("localkms: %v; output:\n%s", err, logs.String())
	}
	s.Keys = []Key{s.CreateKey(tb), s.CreateKey(tb)}
	if _, err := s.Client().CreateAlias(ctx, &kms.CreateAliasInput{
		AliasName:   aws.String(Alias),
		TargetKeyId: aws.String(s.Keys[0].ID),
	}); err != nil {
		tb.Fatalf("localkms: create alias: %v", err)
	}
	return s
}

// waitReady polls until the server answers an API call.
func (s *Server) waitReady(ctx context.Context) error {
	client := s.Client()
	for {
		_, err := client.ListKeys(ctx, &kms.ListKeysInput{})
		if err == nil {
			return nil
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("not answering at %s: %w", s.Endpoint, err)
		case <-time.After(50 * time.Millisecond):
		}
	}
}

// Client returns a KMS client for the server, signing with the fake static
// credentials.
func (s *Server) Client() *kms.Client {
	return kms.NewFromConfig(s.Config(), func(o *kms.Options) {
		o.BaseEndpoint = aws.String(s.Endpoint)
	})
}

// Config returns an aws.Config with Region and the fake static credentials.
// It does not set an endpoint: pass Endpoint as the KMS client's
// BaseEndpoint.
func (s *Server) Config() aws.Config {
	return aws.Config{
		Region:      Region,
		Credentials: credentials.NewStaticCredentialsProvider(AccessKeyID, SecretAccessKey, ""),
	}
}

// SetAWSEnv points the AWS SDK's default configuration chain
// (config.LoadDefaultConfig) at the fake static credentials and Region, and
// away from the developer's own profile, shared files and instance metadata,
// for the rest of tb's test. Like tb.Setenv it cannot be used in parallel
// tests.
func (s *Server) SetAWSEnv(tb testing.TB) {
	tb.Helper()
	dir := tb.TempDir()
	for k, v := range map[string]string{
		"AWS_ACCESS_KEY_ID":           AccessKeyID,
		"AWS_SECRET_ACCESS_KEY":       SecretAccessKey,
		"AWS_SESSION_TOKEN":           "",
		"AWS_REGION":                  Region,
		"AWS_DEFAULT_REGION":          Region,
		"AWS_PROFILE":                 "",
		"AWS_DEFAULT_PROFILE":         "",
		"AWS_CONFIG_FILE":             filepath.Join(dir, "config"),
		"AWS_SHARED_CREDENTIALS_FILE": filepath.Join(dir, "credentials"),
		"AWS_EC2_METADATA_DISABLED":   "true",
		"AWS_ENDPOINT_URL":            "",
		"AWS_ENDPOINT_URL_KMS":        "",
	} {
		tb.Setenv(k, v)
	}
}

// CreateKey creates a new symmetric ENCRYPT_DECRYPT key on the server.
func (s *Server) CreateKey(tb testing.TB) Key {
	tb.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	out, err := s.Client().CreateKey(ctx, &kms.CreateKeyInput{
		KeySpec:     types.KeySpecSymmetricDefault,
		KeyUsage:    types.KeyUsageTypeEncryptDecrypt,
		Description: aws.String("ccproxy test key for " + tb.Name()),
	})
	if err != nil {
		tb.Fatalf("localkms: create key: %v", err)
	}
	if out.KeyMetadata == nil || out.KeyMetadata.KeyId == nil || out.KeyMetadata.Arn == nil {
		tb.Fatalf("localkms: create key: response lacks key id or ARN")
	}
	return Key{ID: *out.KeyMetadata.KeyId, ARN: *out.KeyMetadata.Arn}
}

// Binary returns the path of a local-kms binary: $CCPROXY_LOCAL_KMS if set,
// else one built from the repository's tools module into the user cache
// directory (built on first use).
func Binary(tb testing.TB) string {
	tb.Helper()
	if p := os.Getenv(BinaryEnv); p != "" {
		if _, err := os.Stat(p); err != nil {
			tb.Fatalf("localkms: $%s: %v", BinaryEnv, err)
		}
		return p
	}
	p, err := buildCached()
	if err != nil {
		tb.Fatalf("localkms: %v (or set $%s to a prebuilt binary)", err, BinaryEnv)
	}
	return p
}

func buildCached() (string, error) {
	tools, err := findToolsModule()
	if err != nil {
		return "", err
	}
	h := sha256.New()
	for _, name := range []string{"go.mod", "go.sum"} {
		b, err := os.ReadFile(filepath.Join(tools, name))
		if err != nil && !errors.Is(err, os.ErrNotExist) {
			return "", err
		}
		h.Write(b)
	}
	cache, err := os.UserCacheDir()
	if err != nil {
		return "", fmt.Errorf("find cache directory: %w", err)
	}
	binDir := filepath.Join(cache, "ccproxy", "bin")
	bin := filepath.Join(binDir, "local-kms-"+hex.EncodeToString(h.Sum(nil)[:8]))
	if _, err := os.Stat(bin); err == nil {
		return bin, nil
	}
	if err := os.MkdirAll(binDir, 0o755); err != nil {
		return "", err
	}
	goCmd, err := exec.LookPath("go")
	if err != nil {
		return "", fmt.Errorf("build %s: %w", module, err)
	}
	// Build under a unique name and rename into place, so test binaries of
	// several packages building at once never run a half-written file.
	tmp, err := os.CreateTemp(binDir, ".local-kms-*")
	if err != nil {
		return "", err
	}
	tmp.Close()
	defer os.Remove(tmp.Name())
	cmd := exec.Command(goCmd, "build", "-o", tmp.Name(), module)
	cmd.Dir = tools
	cmd.Env = append(os.Environ(), "GOWORK=off", "GOFLAGS=-mod=readonly")
	if out, err := cmd.CombinedOutput(); err != nil {
		return "", fmt.Errorf("build %s in %s: %w\n%s", module, tools, err, out)
	}
	if err := os.Rename(tmp.Name(), bin); err != nil {
		return "", err
	}
	return bin, nil
}

// findToolsModule walks up from the working directory (a package directory
// under go test) to the repository root, the directory whose go.mod sits
// beside tools/go.mod.
func findToolsModule() (string, error) {
	wd, err := os.Getwd()
	if err != nil {
		return "", err
	}
	for dir := wd; ; {
		tools := filepath.Join(dir, "tools")
		if fileExists(filepath.Join(dir, "go.mod")) && fileExists(filepath.Join(tools, "go.mod")) {
			return tools, nil
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			return "", fmt.Errorf("no tools/go.mod beside a go.mod above %s", wd)
		}
		dir = parent
	}
}

func fileExists(p string) bool {
	_, err := os.Stat(p)
	return err == nil
}

// portPattern matches the line local-kms logs once it has bound its listener:
// with PORT=0 this is the only place the chosen port appears. See
// https://github.com/nsmithuk/local-kms/blob/master/src/server.go ("If
// port==0, figure out where to we bound").
var portPattern = regexp.MustCompile(`Local KMS started on [^\s]*:(\d+)`)

// maxLog bounds the output kept for error messages.
const maxLog = 64 << 10

// logWatcher collects the process output and reports the listening port.
type logWatcher struct {
	port chan string // receives the port once

	mu    sync.Mutex
	buf   bytes.Buffer
	found bool
}

func newLogWatcher() *logWatcher {
	return &logWatcher{port: make(chan string, 1)}
}

func (w *logWatcher) Write(p []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.buf.Len() < maxLog {
		w.buf.Write(p[:min(len(p), maxLog-w.buf.Len())])
	}
	if !w.found {
		if m := portPattern.FindSubmatch(w.buf.Bytes()); m != nil {
			w.found = true
			w.port <- string(m[1])
		}
	}
	return len(p), nil
}

func (w *logWatcher) String() string {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.buf.String()
}

package e2e

import (
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/ccproxy/ccproxy/test/e2e/internal/fakeanthropic"
	"github.com/ccproxy/ccproxy/test/e2e/internal/fakebedrock"
)

// TestWebhookCredentialRefused runs the whole notification path in
// `ccproxy dev`: AWS Bedrock (the fake) refuses a user's Bedrock API key;
// extproc answers the developer with the gateway's 500 and records the
// refused credential in the usage event; the admin service's ingester
// queues one credential.refused for the credential and hour (three
// refused requests, one notification); the dispatcher delivers it, signed,
// to a webhook on loopback (CCPROXY_WEBHOOK_ALLOW_PRIVATE).
func TestWebhookCredentialRefused(t *testing.T) {
	type got struct {
		id, typ string
		body    []byte
		ok      bool
	}
	var (
		mu       sync.Mutex
		received []got
		secret   string
	)
	receiver := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b, _ := io.ReadAll(r.Body)
		ts := r.Header.Get("X-Ccproxy-Timestamp")
		mu.Lock()
		m := hmac.New(sha256.New, []byte(secret))
		m.Write([]byte(ts + "."))
		m.Write(b)
		ok := hmac.Equal([]byte(r.Header.Get("X-Ccproxy-Signature")), []byte("v1="+hex.EncodeToString(m.Sum(nil))))
		received = append(received, got{id: r.Header.Get("X-Ccproxy-Event-Id"), typ: r.Header.Get("X-Ccproxy-Event-Type"), body: b, ok: ok})
		mu.Unlock()
	}))
	t.Cleanup(receiver.Close)

	var sc bedrockScenarios
	plan := fakeanthropic.New(t, func(r fakeanthropic.Request) fakeanthropic.Reply {
		t.Errorf("Plan received %s %s for a Bedrock user", r.Method, r.Path)
		return fakeanthropic.Reply{Status: http.StatusInternalServerError}
	})
	bg := startBedrockGateway(t, &sc, plan, func(fb *fakebedrock.Config, dc *devConfig) {
		// The refused requests are the point; checked below instead.
		fb.AllowProblems = true
		dc.Env = append(dc.Env, "CCPROXY_WEBHOOK_ALLOW_PRIVATE=true")
	})
	a := bg.admin
	var wh struct {
		ID     string `json:"id"`
		Secret string `json:"secret"`
	}
	a.call("POST", "/api/v1/webhooks", map[string]any{"name": "ops", "url": receiver.URL + "/ccproxy",
		"event_types": []string{"credential.refused"}}, &wh)
	mu.Lock()
	secret = wh.Secret
	mu.Unlock()

	// A key AWS does not know: the fake answers 403 UnrecognizedClientException.
	revoked := a.user("stale", "bedrock_only", map[string]string{"type": "api_key",
		"api_key": "ABSKc3RhbGUta2V5LXRoYXQtYXdzLXJlZnVzZXMtMDEyMzQ1Njc4OQ==", "region": "us-east-1"})
	waitBedrockRoutes(t, bg.gateway, revoked.Key)
	for i := 0; i < 3; i++ {
		status, _, body := postJSON(t, bg.Base+"/ak/"+revoked.Key+"/v1/messages",
			`{"model":"claude-opus-5-5","max_tokens":16,"messages":[{"role":"user","content":"hi"}]}`)
		if status != http.StatusInternalServerError {
			t.Fatalf("refused credential: %d %s, want the gateway's 500", status, body)
		}
	}
	// Bedrock saw the three requests and refused each; nothing else went wrong.
	if fs := bg.fb.Failures(); len(fs) != 3 {
		t.Fatalf("fake Bedrock problems = %q, want the three refused requests", fs)
	} else {
		for _, f := range fs {
			if !strings.Contains(f, "UnrecognizedClientException: unknown API key") {
				t.Errorf("fake Bedrock problem %q", f)
			}
		}
	}

	deadline := time.Now().Add(60 * time.Second)
	for {
		mu.Lock()
		n := len(received)
		mu.Unlock()
		if n > 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("no credential.refused delivered within 60 s")
		}
		time.Sleep(200 * time.Millisecond)
	}
	// Let later (wrong) duplicates arrive if there were any.
	time.Sleep(3 * time.Second)
	mu.Lock()
	defer mu.Unlock()
	ids := map[string]bool{}
	for _, r := range received {
		ids[r.id] = true
		if !r.ok || r.typ != "credential.refused" {
			t.Errorf("delivery %s: type %q, signature ok %v", r.id, r.typ, r.ok)
		}
	}
	if len(ids) != 1 {
		t.Fatalf("%d distinct events for three refused requests in one hour, want 1", len(ids))
	}
	var body struct {
		Type string `json:"type"`
		Data struct {
			CredentialID string `json:"credential_id"`
			UserID       string `json:"user_id"`
			UserName     string `json:"user_name"`
			Region       string `json:"region"`
		} `json:"data"`
	}
	if err := json.Unmarshal(received[0].body, &body); err != nil {
		t.Fatal(err)
	}
	if body.Type != "credential.refused" || body.Data.CredentialID == "" || body.Data.UserID != revoked.ID ||
		body.Data.UserName != "stale" || body.Data.Region != "us-east-1" {
		t.Errorf("body = %s", received[0].body)
	}
}

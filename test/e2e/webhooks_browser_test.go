package e2e

import (
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/ccproxy/ccproxy/admin/usageexport"
	"github.com/ccproxy/ccproxy/test/e2e/internal/fakeanthropic"
)

// webhooksBrowserResult is what dashboard/e2e/webhooks.mjs read off the
// pages.
type webhooksBrowserResult struct {
	Error         string
	Secret        string
	EventID       string
	DeliveryRow   string
	RequestsCSV   string
	DailyCSV      string
	RequestsURL   string
	ConsoleErrors []string
}

// TestWebhooksAndExportsInBrowser drives the Webhooks and Exports pages in
// chromium against a real `ccproxy dev`: create a webhook pointing at a
// receiver on loopback (CCPROXY_WEBHOOK_ALLOW_PRIVATE), read its signing
// secret from the dialog that shows it once (and nowhere after), send a
// test event and see it delivered in the webhook's log; download both
// usage exports and read their header rows; a viewer sees neither the
// Webhooks link nor the page. The receiver checks that the test event
// came signed with the secret the page showed.
func TestWebhooksAndExportsInBrowser(t *testing.T) {
	browser := needDashboardBrowser(t)

	type delivery struct {
		id, typ, ts, sig string
		body             []byte
	}
	var (
		mu       sync.Mutex
		received []delivery
	)
	receiver := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b, _ := io.ReadAll(r.Body)
		mu.Lock()
		received = append(received, delivery{id: r.Header.Get("X-Ccproxy-Event-Id"), typ: r.Header.Get("X-Ccproxy-Event-Type"),
			ts: r.Header.Get("X-Ccproxy-Timestamp"), sig: r.Header.Get("X-Ccproxy-Signature"), body: b})
		mu.Unlock()
		w.WriteHeader(http.StatusNoContent)
	}))
	t.Cleanup(receiver.Close)

	// Nothing here sends a request through the gateway.
	fake := fakeanthropic.New(t, func(fakeanthropic.Request) fakeanthropic.Reply {
		return fakeanthropic.Reply{Status: http.StatusNotFound}
	})
	const password = "webhooks-browser-test-pw"
	g := startDevWith(t, devConfig{AnthropicURL: fake.URL, AdminPassword: password,
		Env: []string{"CCPROXY_WEBHOOK_ALLOW_PRIVATE=true"}})
	a := admin{t: t, base: "http://" + g.AdminAddr, token: adminLogin(t, g.AdminAddr, "admin", password)}
	a.call("POST", "/api/v1/admins", map[string]string{"username": "vera", "password": password, "role": "viewer"}, nil)
	var user struct{ ID string }
	a.call("POST", "/api/v1/users", map[string]string{"name": "Ada Export"}, &user)

	var res webhooksBrowserResult
	browser.run(t, 2*time.Minute, "e2e/webhooks.mjs", []string{"ADMIN=http://" + g.AdminAddr, "PASSWORD=" + password, "VIEWER=vera",
		"RECEIVER=" + receiver.URL + "/ccproxy", "DEVELOPER=Ada Export"}, &res)
	if len(res.ConsoleErrors) > 0 {
		t.Errorf("console errors: %q", res.ConsoleErrors)
	}

	// The log row the page showed for the test event.
	if want := "webhook.test|1|delivered (204)"; res.DeliveryRow != want {
		t.Errorf("delivery row = %q, want %q", res.DeliveryRow, want)
	}
	// The receiver got exactly that event, signed with the secret the
	// dialog showed.
	mu.Lock()
	defer mu.Unlock()
	if len(received) != 1 {
		t.Fatalf("receiver got %d deliveries, want the one test event", len(received))
	}
	d := received[0]
	if d.id != res.EventID || d.typ != "webhook.test" {
		t.Errorf("received event %s of type %q, want %s webhook.test", d.id, d.typ, res.EventID)
	}
	m := hmac.New(sha256.New, []byte(res.Secret))
	m.Write([]byte(d.ts + "."))
	m.Write(d.body)
	if want := "v1=" + hex.EncodeToString(m.Sum(nil)); !hmac.Equal([]byte(d.sig), []byte(want)) {
		t.Errorf("signature %q does not match the secret the page showed", d.sig)
	}

	// The downloads: the header rows of both exports, and the developer
	// filter in the per-request one's address.
	if want := strings.Join(usageexport.RequestColumns, ","); res.RequestsCSV != want {
		t.Errorf("per-request header = %q, want %q", res.RequestsCSV, want)
	}
	if want := strings.Join(usageexport.DailyColumns, ","); res.DailyCSV != want {
		t.Errorf("daily header = %q, want %q", res.DailyCSV, want)
	}
	if !strings.Contains(res.RequestsURL, "/api/v1/usage/export/requests?") || !strings.Contains(res.RequestsURL, "user_id="+user.ID) {
		t.Errorf("per-request export URL %q, want the requests export of user %s", res.RequestsURL, user.ID)
	}
}

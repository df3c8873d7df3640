// Package oidctest runs a real OpenID Connect provider for tests: zitadel's
// certified OP library (github.com/zitadel/oidc/v3/pkg/op) with its example
// in-memory storage and login page. The protocol (discovery, authorization
// endpoint, PKCE, code exchange, signed ID tokens, JWKS, userinfo) is the
// library's; this package adds only a directory of people and their groups,
// released as the "groups" claim of the ID token when the client asks for
// the "groups" scope. Only tests import it.
package oidctest

import (
	"context"
	"net/http/httptest"
	"slices"
	"testing"

	"github.com/zitadel/oidc/v3/example/server/exampleop"
	"github.com/zitadel/oidc/v3/example/server/storage"
	"github.com/zitadel/oidc/v3/pkg/oidc"
	"github.com/zitadel/oidc/v3/pkg/op"
)

// Person is a user of the provider.
type Person struct {
	ID, Username, Password, Email string
	Groups                        []string
}

// Client is a client registered at the provider.
type Client = storage.Client

// WebClient is a confidential client (HTTP Basic client authentication)
// with exactly these redirect URLs.
func WebClient(id, secret string, redirectURLs ...string) *Client {
	return storage.WebClient(id, secret, redirectURLs...)
}

// LoginPath is where the provider's login form posts (fields id, username,
// password); the browser reaches the form at LoginPath?authRequestID=….
const LoginPath = "/login/username"

// Provider is a running provider.
type Provider struct {
	// Issuer is its issuer URL (http://127.0.0.1:port).
	Issuer string
	srv    *httptest.Server
}

// New reserves the provider's address, so that its issuer can be
// configured before the clients are known, and returns a start function
// that registers the clients and serves until the test ends.
func New(t testing.TB, people []Person) (issuer string, start func(clients ...*Client) *Provider) {
	t.Helper()
	hs := httptest.NewUnstartedServer(nil)
	issuer = "http://" + hs.Listener.Addr().String()
	return issuer, func(clients ...*Client) *Provider {
		m := map[string]*storage.Client{}
		for _, c := range clients {
			m[c.GetID()] = c
		}
		st := groupStorage{Storage: storage.NewStorageWithClients(directory(people), m), people: people}
		hs.Config.Handler = exampleop.SetupServer(issuer, st, nil, false)
		hs.Start()
		t.Cleanup(hs.Close)
		return &Provider{Issuer: issuer, srv: hs}
	}
}

// directory is the provider's user store.
type directory []Person

func (d directory) GetUserByID(id string) *storage.User {
	for _, p := range d {
		if p.ID == id {
			return &storage.User{ID: p.ID, Username: p.Username, Password: p.Password, Email: p.Email, EmailVerified: true,
				FirstName: p.Username, LastName: "Test"}
		}
	}
	return nil
}

func (d directory) GetUserByUsername(name string) *storage.User {
	for _, p := range d {
		if p.Username == name {
			return d.GetUserByID(p.ID)
		}
	}
	return nil
}

func (directory) ExampleClientID() string { return "" }

// groupStorage is the example storage plus the groups claim.
type groupStorage struct {
	*storage.Storage
	people []Person
}

func (s groupStorage) SetUserinfoFromScopes(ctx context.Context, ui *oidc.UserInfo, userID, clientID string, scopes []string) error {
	if err := s.Storage.SetUserinfoFromScopes(ctx, ui, userID, clientID, scopes); err != nil {
		return err
	}
	if slices.Contains(scopes, "groups") {
		for _, p := range s.people {
			if p.ID == userID {
				ui.AppendClaims("groups", p.Groups)
			}
		}
	}
	return nil
}

func (s groupStorage) GetClientByClientID(ctx context.Context, id string) (op.Client, error) {
	c, err := s.Storage.GetClientByClientID(ctx, id)
	if err != nil {
		return nil, err
	}
	return groupsClient{c}, nil
}

// groupsClient lets clients ask for the groups scope.
type groupsClient struct{ op.Client }

func (c groupsClient) IsScopeAllowed(scope string) bool {
	return scope == "groups" || c.Client.IsScopeAllowed(scope)
}

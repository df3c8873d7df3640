package cli

import (
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"time"
)

// ErrNotLoggedIn is returned when a command needs a session and none is
// saved or given through the environment.
var ErrNotLoggedIn = errors.New(`not logged in: run "ccproxy login --server URL --username NAME" or set ` + EnvServer + " and " + EnvToken)

// savedSession is the content of the CLI's config file.
type savedSession struct {
	Server    string    `json:"server"`
	Token     string    `json:"token"`
	ExpiresAt time.Time `json:"expires_at"`
}

// configPath is where the session is saved: $CCPROXY_CLI_CONFIG, else
// $XDG_CONFIG_HOME/ccproxy/cli.json, else ~/.config/ccproxy/cli.json.
func (a *app) configPath() (string, error) {
	if p := a.getenv(EnvConfig); p != "" {
		return p, nil
	}
	if d := a.getenv("XDG_CONFIG_HOME"); d != "" && filepath.IsAbs(d) {
		return filepath.Join(d, "ccproxy", "cli.json"), nil
	}
	home := a.getenv("HOME")
	if home == "" {
		return "", fmt.Errorf("cannot locate the config file: set HOME, XDG_CONFIG_HOME or %s", EnvConfig)
	}
	return filepath.Join(home, ".config", "ccproxy", "cli.json"), nil
}

// loadSession reads the saved session; a missing file yields a zero value.
func (a *app) loadSession() (savedSession, string, error) {
	var s savedSession
	path, err := a.configPath()
	if err != nil {
		return s, "", err
	}
	b, err := os.ReadFile(path)
	if errors.Is(err, fs.ErrNotExist) {
		return s, path, nil
	}
	if err != nil {
		return s, path, fmt.Errorf("read %s: %w", path, err)
	}
	if err := json.Unmarshal(b, &s); err != nil {
		return s, path, fmt.Errorf("%s is corrupt (run ccproxy login again): %w", path, err)
	}
	return s, path, nil
}

// saveSession writes the session with mode 0600 through a temporary file
// and a rename, so a crash never leaves a half-written file and the token
// is never readable by others, not even briefly.
func saveSession(path string, s savedSession) error {
	b, err := json.MarshalIndent(s, "", "  ")
	if err != nil {
		return err
	}
	dir := filepath.Dir(path)
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return fmt.Errorf("create %s: %w", dir, err)
	}
	f, err := os.CreateTemp(dir, ".cli-*.json")
	if err != nil {
		return fmt.Errorf("save session: %w", err)
	}
	tmp := f.Name()
	defer os.Remove(tmp) // a no-op once renamed
	if err := f.Chmod(0o600); err != nil {
		f.Close()
		return fmt.Errorf("save session: %w", err)
	}
	if _, err := f.Write(append(b, '\n')); err != nil {
		f.Close()
		return fmt.Errorf("save session: %w", err)
	}
	if err := f.Close(); err != nil {
		return fmt.Errorf("save session: %w", err)
	}
	if err := os.Rename(tmp, path); err != nil {
		return fmt.Errorf("save session: %w", err)
	}
	return nil
}

// client resolves the server and token: --server, then $CCPROXY_SERVER,
// then the saved server; $CCPROXY_TOKEN, then the saved token.
func (a *app) client(g *globals, now time.Time) (*client, error) {
	if err := g.check(); err != nil {
		return nil, err
	}
	saved, _, err := a.loadSession()
	if err != nil {
		return nil, err
	}
	server := firstNonEmpty(g.server, a.getenv(EnvServer), saved.Server)
	token := a.getenv(EnvToken)
	if token == "" {
		// A saved token belongs to the saved server only: never send it to
		// another host named by --server.
		if saved.Token != "" && server != "" {
			norm, err := normalizeServer(server)
			if err == nil && norm == saved.Server {
				token = saved.Token
				if !saved.ExpiresAt.IsZero() && !now.Before(saved.ExpiresAt) {
					return nil, fmt.Errorf(`the session expired at %s: run "ccproxy login" again`, saved.ExpiresAt.UTC().Format(time.RFC3339))
				}
			}
		}
	}
	if server == "" || token == "" {
		return nil, ErrNotLoggedIn
	}
	base, err := normalizeServer(server)
	if err != nil {
		return nil, err
	}
	return &client{base: base, token: token, hc: a.hc}, nil
}

func firstNonEmpty(ss ...string) string {
	for _, s := range ss {
		if s != "" {
			return s
		}
	}
	return ""
}

package cli

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"time"

	"github.com/spf13/cobra"
)

// stream sends a GET and copies a 2xx answer's body to w as it arrives;
// an error answer is an *APIError. The whole-call timeout of the other
// commands does not apply: an export of a year may take minutes, and the
// server cuts a connection that stops making progress.
func (c *client) stream(ctx context.Context, path string, query url.Values, w io.Writer) error {
	u := c.base + path
	if len(query) > 0 {
		u += "?" + query.Encode()
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u, nil)
	if err != nil {
		return err
	}
	req.Header.Set("Accept", "text/csv, application/problem+json")
	if c.token != "" {
		req.Header.Set("Authorization", "Bearer "+c.token)
	}
	hc := *c.hc
	hc.Timeout = 0
	resp, err := hc.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if resp.StatusCode < 200 || resp.StatusCode >= 300 {
		raw, err := io.ReadAll(io.LimitReader(resp.Body, maxResponseBytes))
		if err != nil {
			return fmt.Errorf("GET %s: reading the response: %w", path, err)
		}
		return problemError(resp, raw)
	}
	if _, err := io.Copy(w, resp.Body); err != nil {
		// A transfer cut short: the server aborts an export that failed
		// after it started rather than end it early.
		return fmt.Errorf("GET %s: the export was interrupted: %w", path, err)
	}
	return nil
}

func (a *app) usageExport(g *globals) *cobra.Command {
	var (
		f        usageFilters
		daily    bool
		tz, out  string
		provider string
	)
	cmd := &cobra.Command{
		Use:   "export --from T --to T [--daily] [--user ID] [--key ID] -o FILE",
		Short: "Export usage as CSV (FOCUS columns): one row per request, or per day × user × model with --daily",
		Long: `Writes usage as CSV with FinOps FOCUS column names (BilledCost, EffectiveCost, ListCost,
ChargePeriodStart, ServiceName, …) and ccproxy's own x_ columns (docs/exports.md): one row per request,
oldest first, or with --daily one row per day × user × model × provider. The file is written
as the server streams it and only appears, complete, at the end: a failed export leaves nothing.
-o - writes to standard output.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if f.from == "" || f.to == "" {
				return errors.New("--from and --to are required")
			}
			if out == "" {
				return errors.New("-o FILE is required (- for standard output)")
			}
			q, err := f.query()
			if err != nil {
				return err
			}
			path := "/api/v1/usage/export/requests"
			if daily {
				path = "/api/v1/usage/export/daily"
				if tz != "" {
					q.Set("tz", tz)
				}
			} else if provider != "" {
				q.Set("provider", provider)
			}
			c, err := a.client(g, time.Now())
			if err != nil {
				return err
			}
			if out == "-" {
				return c.stream(cmd.Context(), path, q, cmd.OutOrStdout())
			}
			tmp, err := os.CreateTemp(filepath.Dir(out), "."+filepath.Base(out)+".*")
			if err != nil {
				return err
			}
			defer os.Remove(tmp.Name())
			if err := c.stream(cmd.Context(), path, q, tmp); err != nil {
				tmp.Close()
				if isStatus(err, http.StatusUnauthorized) {
					return fmt.Errorf("%w\n(run \"ccproxy login\" to start a new session)", err)
				}
				return err
			}
			if err := tmp.Close(); err != nil {
				return err
			}
			if err := os.Chmod(tmp.Name(), 0o644); err != nil {
				return err
			}
			if err := os.Rename(tmp.Name(), out); err != nil {
				return err
			}
			fmt.Fprintf(cmd.ErrOrStderr(), "wrote %s\n", out)
			return nil
		},
	}
	f.register(cmd)
	cmd.Flags().BoolVar(&daily, "daily", false, "one row per day × user × model × provider instead of one per request")
	cmd.Flags().StringVar(&tz, "tz", "", "with --daily: IANA time zone of the days (default: the billing time zone)")
	cmd.Flags().StringVar(&provider, "provider", "", "per-request export only: anthropic or bedrock")
	cmd.Flags().StringVarP(&out, "output", "o", "", "file to write (- for standard output)")
	return cmd
}

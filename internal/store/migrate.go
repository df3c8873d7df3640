package store

import (
	"context"
	"database/sql"
	"embed"
	"errors"
	"fmt"
	"io/fs"
	"path"
	"time"

	"github.com/jackc/pgx/v5/stdlib"
	"github.com/pressly/goose/v3"
	"github.com/pressly/goose/v3/lock"
)

//go:embed migrations/*.sql
var migrationFiles embed.FS

// migrationLockID is the advisory lock every ccproxy migrator takes, so two
// replicas starting at once apply each migration once ("ccproxy" in ASCII).
const migrationLockID = 0x6363_7072_6f78_79

// ErrSchemaOutdated is returned by CheckSchema when migrations are pending.
var ErrSchemaOutdated = errors.New("store: database schema is not up to date (run `ccproxy migrate up`)")

// MigrationResult is one migration applied or rolled back.
type MigrationResult struct {
	Version   int64
	Name      string // file name, e.g. 00001_core.sql
	Direction string // "up" or "down"
	Duration  time.Duration
}

// MigrationState is one migration and whether it is applied.
type MigrationState struct {
	Version int64
	Name    string
	Applied bool
	// AppliedAt is when it was applied; zero when pending.
	AppliedAt time.Time
}

// MigrateUp applies every pending migration.
func MigrateUp(ctx context.Context, dsn string) ([]MigrationResult, error) {
	return migrate(ctx, dsn, "up", func(p *goose.Provider) ([]*goose.MigrationResult, error) {
		return p.Up(ctx)
	})
}

// MigrateDown rolls back the most recently applied migration. It returns no
// results, and no error, when nothing is applied.
func MigrateDown(ctx context.Context, dsn string) ([]MigrationResult, error) {
	return migrate(ctx, dsn, "down", func(p *goose.Provider) ([]*goose.MigrationResult, error) {
		r, err := p.Down(ctx)
		if errors.Is(err, goose.ErrNoNextVersion) {
			return nil, nil
		}
		if err != nil {
			return nil, err
		}
		return []*goose.MigrationResult{r}, nil
	})
}

// MigrateDownTo rolls back every migration newer than version; 0 removes the
// whole schema.
func MigrateDownTo(ctx context.Context, dsn string, version int64) ([]MigrationResult, error) {
	if version < 0 {
		return nil, invalidf("negative migration version %d", version)
	}
	return migrate(ctx, dsn, "down", func(p *goose.Provider) ([]*goose.MigrationResult, error) {
		return p.DownTo(ctx, version)
	})
}

// MigrationStatus lists every known migration, oldest first.
func MigrationStatus(ctx context.Context, dsn string) ([]MigrationState, error) {
	var out []MigrationState
	err := withProvider(ctx, dsn, func(p *goose.Provider) error {
		st, err := p.Status(ctx)
		if err != nil {
			return err
		}
		for _, s := range st {
			out = append(out, MigrationState{
				Version:   s.Source.Version,
				Name:      path.Base(s.Source.Path),
				Applied:   s.State == goose.StateApplied,
				AppliedAt: s.AppliedAt,
			})
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("store: migration status: %w", err)
	}
	return out, nil
}

// CheckSchema returns ErrSchemaOutdated when the database lacks migrations
// this binary knows, so services refuse to start on an old schema.
func (s *Store) CheckSchema(ctx context.Context) error {
	db := stdlib.OpenDBFromPool(s.pool)
	defer db.Close()
	p, err := newProvider(db)
	if err != nil {
		return err
	}
	pending, err := p.HasPending(ctx)
	if err != nil {
		return fmt.Errorf("store: check schema: %w", err)
	}
	if pending {
		return ErrSchemaOutdated
	}
	return nil
}

func migrate(ctx context.Context, dsn, dir string, run func(*goose.Provider) ([]*goose.MigrationResult, error)) ([]MigrationResult, error) {
	var out []MigrationResult
	err := withProvider(ctx, dsn, func(p *goose.Provider) error {
		res, err := run(p)
		for _, r := range res {
			if r == nil || r.Source == nil {
				continue
			}
			out = append(out, MigrationResult{
				Version:   r.Source.Version,
				Name:      path.Base(r.Source.Path),
				Direction: r.Direction,
				Duration:  r.Duration,
			})
		}
		return err
	})
	if err != nil {
		return out, fmt.Errorf("store: migrate %s: %w", dir, err)
	}
	return out, nil
}

func withProvider(ctx context.Context, dsn string, fn func(*goose.Provider) error) error {
	db, err := sql.Open("pgx", dsn)
	if err != nil {
		return fmt.Errorf("open database: %w", err)
	}
	defer db.Close()
	if err := db.PingContext(ctx); err != nil {
		return fmt.Errorf("connect: %w", err)
	}
	p, err := newProvider(db)
	if err != nil {
		return err
	}
	return fn(p)
}

func newProvider(db *sql.DB) (*goose.Provider, error) {
	fsys, err := fs.Sub(migrationFiles, "migrations")
	if err != nil {
		return nil, fmt.Errorf("store: migrations: %w", err)
	}
	locker, err := lock.NewPostgresSessionLocker(lock.WithLockID(migrationLockID))
	if err != nil {
		return nil, fmt.Errorf("store: migration lock: %w", err)
	}
	p, err := goose.NewProvider(goose.DialectPostgres, db, fsys,
		goose.WithSessionLocker(locker),
		// Only this package's embedded files, never migrations registered
		// globally by some other import.
		goose.WithDisableGlobalRegistry(true),
	)
	if err != nil {
		return nil, fmt.Errorf("store: migrations: %w", err)
	}
	return p, nil
}

package usagestream

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"

	"github.com/ccproxy/ccproxy/internal/usage"
)

// SpoolFile is the name of the Producer's write-ahead file in
// ProducerOptions.SpoolDir.
const SpoolFile = "usage-spool.jsonl"

// spool is the Producer's write-ahead file: every event that waits in the
// in-memory buffer is first appended to it (one Encode payload per line)
// and synced to disk, so that a process killed before Redis took the event
// leaves it behind for the next start. It is emptied whenever the buffer
// has drained.
//
// write and truncate are called under the Producer's mutex; sync is not,
// so that one fsync covers every line written while the previous one ran
// (group commit) instead of each event waiting for its own under the lock.
type spool struct {
	path string
	f    *os.File
	line []byte // reused append buffer; under the Producer's mutex

	written atomic.Uint64 // lines written so far

	syncMu sync.Mutex
	synced uint64 // lines known to be on disk; under syncMu
}

// openSpool opens (creating) the spool in dir and returns the events a
// previous process left in it, oldest first, and how many lines could not
// be decoded (a line torn by a crash mid-write).
func openSpool(dir string) (*spool, []usage.Event, int, error) {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, nil, 0, fmt.Errorf("usagestream: spool directory: %w", err)
	}
	path := filepath.Join(dir, SpoolFile)
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE|os.O_APPEND, 0o600)
	if err != nil {
		return nil, nil, 0, fmt.Errorf("usagestream: open spool: %w", err)
	}
	evs, bad, err := readSpool(f)
	if err != nil {
		f.Close()
		return nil, nil, 0, fmt.Errorf("usagestream: read spool %s: %w", path, err)
	}
	// A line torn by a crash must not swallow the next event appended.
	if err := endLine(f); err != nil {
		f.Close()
		return nil, nil, 0, fmt.Errorf("usagestream: repair spool %s: %w", path, err)
	}
	return &spool{path: path, f: f}, evs, bad, nil
}

// endLine appends a newline to f unless it is empty or ends with one.
func endLine(f *os.File) error {
	fi, err := f.Stat()
	if err != nil || fi.Size() == 0 {
		return err
	}
	last := make([]byte, 1)
	if _, err := f.ReadAt(last, fi.Size()-1); err != nil {
		return err
	}
	if last[0] == '\n' {
		return nil
	}
	_, err = f.Write([]byte{'\n'})
	return err
}

func readSpool(r io.Reader) (evs []usage.Event, bad int, err error) {
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 0, 64<<10), MaxEntrySize+1)
	for sc.Scan() {
		line := bytes.TrimSpace(sc.Bytes())
		if len(line) == 0 {
			continue
		}
		ev, err := Decode(line)
		if err != nil {
			bad++
			continue
		}
		evs = append(evs, ev)
	}
	if err := sc.Err(); err != nil && !errors.Is(err, bufio.ErrTooLong) {
		return evs, bad, err
	}
	return evs, bad, nil
}

// write appends ev and returns its line's sequence number for sync.
func (s *spool) write(ev usage.Event) (uint64, error) {
	s.line = append(append(s.line[:0], Encode(ev)...), '\n')
	if _, err := s.f.Write(s.line); err != nil {
		return 0, fmt.Errorf("usagestream: write spool: %w", err)
	}
	return s.written.Add(1), nil
}

// sync returns once line seq is on disk: at once if an fsync that began
// after it was written has completed, else after one more fsync, which
// also covers every line written meanwhile.
func (s *spool) sync(seq uint64) error {
	s.syncMu.Lock()
	defer s.syncMu.Unlock()
	if s.synced >= seq {
		return nil
	}
	upTo := s.written.Load()
	if err := s.f.Sync(); err != nil {
		return fmt.Errorf("usagestream: sync spool: %w", err)
	}
	s.synced = upTo
	return nil
}

// append writes ev and syncs the file: when it returns nil, the event
// survives the process. (For tests and single writers.)
func (s *spool) append(ev usage.Event) error {
	seq, err := s.write(ev)
	if err != nil {
		return err
	}
	return s.sync(seq)
}

// truncate empties the spool: everything in it has reached Redis. (A crash
// before the truncation reaches the disk replays those events again; the
// ingester skips request ids it has stored.)
func (s *spool) truncate() error {
	if err := s.f.Truncate(0); err != nil {
		return fmt.Errorf("usagestream: truncate spool: %w", err)
	}
	return nil
}

func (s *spool) close() error { return s.f.Close() }

package acme

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"time"
)

// NameState is what berth remembers per hostname across restarts, so a
// restart never hammers the CA and an operator can see the last error.
type NameState struct {
	Failures    int       `json:"failures,omitempty"`
	NextAttempt time.Time `json:"next_attempt,omitempty"`
	LastError   string    `json:"last_error,omitempty"`
	// Revoked holds the name back after "berth revoke" until "berth renew --force".
	Revoked bool `json:"revoked,omitempty"`
	// LastServed is when a site last used the name (to the hour);
	// certificates no site has used for UnusedGrace are removed.
	LastServed time.Time `json:"last_served,omitempty"`
}

// stateFile is <state>/names.json.
type stateFile struct {
	path string
}

func (s stateFile) load() (map[string]NameState, error) {
	raw, err := os.ReadFile(s.path)
	if errors.Is(err, os.ErrNotExist) {
		return map[string]NameState{}, nil
	}
	if err != nil {
		return nil, fmt.Errorf("read %s: %w", s.path, err)
	}
	m := map[string]NameState{}
	if err := json.Unmarshal(raw, &m); err != nil {
		return nil, fmt.Errorf("parse %s: %w", s.path, err)
	}
	return m, nil
}

func (s stateFile) save(m map[string]NameState) error {
	raw, err := json.MarshalIndent(m, "", "  ")
	if err != nil {
		return err
	}
	if err := os.MkdirAll(filepath.Dir(s.path), 0o700); err != nil {
		return err
	}
	tmp := s.path + ".tmp"
	if err := writeFile(tmp, raw, 0o600); err != nil {
		return err
	}
	return os.Rename(tmp, s.path)
}

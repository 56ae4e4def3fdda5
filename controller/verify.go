package controller

import (
	"context"
	"errors"
	"slices"
	"strings"
	"time"

	"github.com/sirupsen/logrus"

	"github.com/berthproxy/berth/nginxconf"
)

// The served-certificate check. After a reload that puts a new certificate
// in front of a host, berth makes a TLS handshake to nginx for that host and
// compares the serial it is served with the stored one: a renewal that nginx
// did not load would otherwise go unnoticed until the old certificate
// expires.
const (
	// verifyDelay: nginx's new workers answer within about 200 ms of the
	// signal; the check waits a little longer.
	verifyDelay = 500 * time.Millisecond
	// resignalAfter: after this many checks in a row that find the old
	// certificate, the reload itself is assumed lost and sent again.
	resignalAfter = 3
	// verifyGiveUp: a check that keeps failing (nginx unreachable from
	// berth, say) stops after this many attempts, about five minutes with
	// the loop's backoff, until the next change.
	verifyGiveUp = 30
)

// errServed means nginx does not (yet) serve a stored certificate.
var errServed = errors.New("nginx does not serve the stored certificate")

// expectServed records the hosts whose certificate file is new to the
// config just applied: their serial must be checked on the wire.
func (c *Controller) expectServed(cfg nginxconf.Config, certs map[string]CertFiles, previous nginxconf.Files, now time.Time) {
	c.verifyAfter = now.Add(verifyDelay)
	before := referencedCertFiles(previous)
	live := map[string]bool{}
	for _, s := range cfg.Sites {
		live[s.Host] = true
		f, ok := CertFor(certs, s.Host)
		if s.TLS == nil || s.HTTPS == nginxconf.HTTPSOff || !ok || f.Serial == "" {
			continue
		}
		if !slices.Contains(before, s.TLS.CertFile) {
			c.verify[s.Host] = f.Serial
		}
	}
	for h := range c.verify {
		if !live[h] {
			delete(c.verify, h)
		}
	}
	c.verifyFails = 0
}

// checkServed runs the pending checks. It returns errServed while one
// fails, so the loop retries with backoff.
func (c *Controller) checkServed(ctx context.Context, now time.Time, log *logrus.Entry) error {
	if len(c.verify) == 0 || now.Before(c.verifyAfter) {
		return nil // a pass soon after the reload: old workers may still answer
	}
	for _, host := range sortedKeys(c.verify) {
		want := c.verify[host]
		got, err := c.nginx.ServedSerial(ctx, sniFor(host))
		if err == nil && got == want {
			delete(c.verify, host)
			log.WithFields(logrus.Fields{"host": host, "serial": want}).Info("nginx serves the stored certificate")
			continue
		}
		e := log.WithFields(logrus.Fields{"host": host, "stored_serial": want, "served_serial": got, "attempt": c.verifyFails + 1})
		if err != nil {
			e = e.WithError(err)
		}
		e.Error("nginx does not serve the stored certificate")
	}
	if len(c.verify) == 0 {
		c.verifyFails = 0
		return nil
	}
	c.verifyFails++
	switch {
	case c.verifyFails >= verifyGiveUp:
		log.WithField("hosts", sortedKeys(c.verify)).Error("giving up checking the served certificate until the next change")
		clear(c.verify)
		c.verifyFails = 0
		return nil
	case c.verifyFails%resignalAfter == 0:
		c.applier.unconfirmed = true // the next pass validates and signals again
	}
	return errServed
}

// sniFor is the name a handshake asks for to reach host's server block: a
// wildcard host is asked for through one name it matches.
func sniFor(host string) string {
	if rest, ok := strings.CutPrefix(host, "*."); ok {
		return "berth-check." + rest
	}
	return host
}

// Package acme owns certificates: the ACME account, certificate storage on
// disk, issuance and renewal through lego with the HTTP-01 webroot, per-name
// backoff, and the renewal schedule.
//
// It knows nothing of Docker or nginx. The controller tells it which host
// sets are wanted (Manager.Want, never blocking), asks which hosts have a
// certificate on disk (Manager.Certs) and gets a callback when a certificate
// is stored. Only lego.go imports lego, so the ACME client can be swapped.
package acme

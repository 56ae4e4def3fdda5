// Package acme owns certificates: the ACME account, certificate storage on
// disk, issuance and renewal through lego with the HTTP-01 webroot or a DNS
// provider (DNS-01, and so wildcards), per-name backoff, and the renewal
// schedule.
//
// It knows nothing of Docker or nginx. The controller tells it which
// certificates are wanted and how to order them (Manager.Want with
// CertRequests, never blocking), asks which files to serve
// per host (Manager.Certs: immutable version paths, so a renewal changes
// the config), says which files the config on disk names (Manager.InUse,
// so old versions can go), and waits on Manager.Changed for anything that
// may change Certs. "berth renew" and "berth revoke" change the same files
// through the same code (ops.go) from another process; the daemon notices
// within seconds. Only lego.go imports lego, so the ACME client can be
// swapped.
//
// Certificates berth did not order come in two ways. The user's own
// (Options.UserDir, usercerts.go) stay the user's: checked, copied into
// the store's volume, served ahead of berth's and never renewed. Imported
// ones ("berth import", import.go) become berth's own through Store.Save
// and are renewed like any other. pairs.go reads and checks both.
package acme

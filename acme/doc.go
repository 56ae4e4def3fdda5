// Package acme will own the ACME account, certificate storage on disk,
// issuance and renewal through lego with the HTTP-01 webroot, backoff and the
// renewal schedule. It must know nothing of Docker or nginx.
//
// It is filled by the certificates issue; the nginx renderer already takes
// "this host has a certificate at these paths" (nginxconf.TLS) as input.
package acme

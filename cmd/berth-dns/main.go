// Command berth-dns runs one of lego's DNS providers for berth's DNS-01
// challenges: "berth-dns PROVIDER check" configures the provider from its
// own environment variables and prints its propagation timeout and polling
// interval in seconds; "berth-dns PROVIDER present|cleanup DOMAIN TOKEN
// KEYAUTH" adds or removes the TXT record.
//
// It is a program of its own, started by the berth daemon once at start
// (check) and for each DNS-01 challenge, because linking lego's ~190 DNS
// providers and their cloud SDKs costs every process that contains them
// about 27 MB of memory at start (their package initialisation) and
// quadruples the binary. The daemon, the CLI commands and the Swarm agent
// stay small; the providers' memory is paid only while a record is being
// written. The contract with the daemon is this argument list, the exit
// code, and the last line of standard error (the reason, on failure).
package main

import (
	"fmt"
	"io"
	"os"
	"time"

	"github.com/go-acme/lego/v4/challenge"
	"github.com/go-acme/lego/v4/challenge/dns01"
	"github.com/go-acme/lego/v4/providers/dns"
)

func main() {
	os.Exit(run(os.Args[1:], os.Stdout, os.Stderr))
}

func run(args []string, stdout, stderr io.Writer) int {
	if len(args) < 2 {
		fmt.Fprintln(stderr, "usage: berth-dns PROVIDER check | PROVIDER present|cleanup DOMAIN TOKEN KEYAUTH")
		return 2
	}
	name, verb := args[0], args[1]
	p, err := dns.NewDNSChallengeProviderByName(name)
	if err != nil {
		fmt.Fprintf(stderr, "DNS provider %q (BERTH_ACME_DNS_PROVIDER) is not usable: %v\n", name, err)
		return 1
	}
	switch {
	case verb == "check" && len(args) == 2:
		timeout, interval := timing(p)
		fmt.Fprintf(stdout, "%d %d\n", int64(timeout/time.Second), int64(interval/time.Second))
		return 0
	case verb == "present" && len(args) == 5:
		err = p.Present(args[2], args[3], args[4])
	case verb == "cleanup" && len(args) == 5:
		err = p.CleanUp(args[2], args[3], args[4])
	default:
		fmt.Fprintf(stderr, "berth-dns: unknown call %q with %d arguments\n", verb, len(args)-2)
		return 2
	}
	if err != nil {
		fmt.Fprintf(stderr, "DNS provider %q: %s %s: %v\n", name, verb, args[2], err)
		return 1
	}
	return 0
}

// timing is the provider's own propagation timeout and polling interval
// (most providers read them from <PROVIDER>_PROPAGATION_TIMEOUT and
// _POLLING_INTERVAL), or lego's defaults for those that have none.
func timing(p challenge.Provider) (timeout, interval time.Duration) {
	if t, ok := p.(challenge.ProviderTimeout); ok {
		return t.Timeout()
	}
	return dns01.DefaultPropagationTimeout, dns01.DefaultPollingInterval
}

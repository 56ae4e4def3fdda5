package controller

// dnsLabel reports whether l is one label of a lower-case ASCII hostname:
// 1 to 63 letters, digits or inner hyphens, the expression
// ^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$ (kept in dnslabel_test.go, which
// checks this loop against it). A loop rather than the expression because
// every pass checks every label of every host, and the expression's
// counted repetition made it the costliest check of label parsing.
func dnsLabel(l string) bool {
	if l == "" || len(l) > 63 || !lowerAlnum(l[0]) || !lowerAlnum(l[len(l)-1]) {
		return false
	}
	for i := 1; i < len(l)-1; i++ {
		if !lowerAlnum(l[i]) && l[i] != '-' {
			return false
		}
	}
	return true
}

func lowerAlnum(c byte) bool { return 'a' <= c && c <= 'z' || '0' <= c && c <= '9' }

package nginxconf

import (
	"fmt"
	"strings"
)

// ErrorPagesFile holds berth's own answers for 502, 503 and 504. Every
// server block berth writes includes it; it ends in IncludeSuffix, so
// nginx's "*.conf" include never loads it at http level, where locations
// are not allowed.
const ErrorPagesFile = FilePrefix + "_error-pages" + IncludeSuffix

// Shared reports whether name is one of the files every site depends on
// (the default server and the error pages): they are always part of a
// known-good base and are never blamed for, or held back by, one host's
// rejected change.
func Shared(name string) bool { return name == DefaultFile || name == ErrorPagesFile }

// errorPages are the statuses berth answers with its own page: the ones
// nginx itself produces when berth has no backend to offer (503) or the
// backend cannot be reached or is too slow (502, 504). A backend's own
// 502 passes through untouched (proxy_intercept_errors stays off).
var errorPages = []struct {
	code        int
	title, text string
}{
	{502, "Bad Gateway", "The service behind this address did not answer properly."},
	{503, "Service Unavailable", "The service behind this address is not available right now."},
	{504, "Gateway Timeout", "The service behind this address took too long to answer."},
}

// renderErrorPages is the included file: one named location per status,
// answering a small HTML page that names no software and no version
// (nginx's own pages name nginx). The page has no quote, backslash or "$",
// so it is a plain nginx string. error_page directives come first in a
// server and nginx takes the first match, so a user's server snippet that
// sets its own error_page (rendered before the include) wins.
func renderErrorPages() []byte {
	var b strings.Builder
	b.WriteString(header)
	b.WriteString("# berth's answers for 502, 503 and 504, included in every server block it writes.\n")
	for _, p := range errorPages {
		fmt.Fprintf(&b, "error_page %d @berth_%d;\n", p.code, p.code)
	}
	for _, p := range errorPages {
		fmt.Fprintf(&b, "location @berth_%d {\n    default_type text/html;\n", p.code)
		fmt.Fprintf(&b, "    return %d \"%s\";\n}\n", p.code, errorPage(p.code, p.title, p.text))
	}
	return []byte(b.String())
}

// errorPage is the body for one status; \n is nginx's escape for a newline.
func errorPage(code int, title, text string) string {
	return fmt.Sprintf(`<!doctype html>\n<html lang=en><meta charset=utf-8>`+
		`<title>%[1]d %[2]s</title><h1>%[1]d %[2]s</h1><p>%[3]s Please try again in a moment.</p></html>\n`, code, title, text)
}

// writeErrorPages includes the error pages in a server block. Relative to
// nginx's config prefix (/etc/nginx), where conf.d is, as for htpasswd files.
func writeErrorPages(b *strings.Builder) {
	b.WriteString("    include conf.d/" + ErrorPagesFile + ";\n")
}

package controller

import (
	"errors"
	"fmt"
	"strings"
)

// maxSnippet bounds a snippet label; longer configuration belongs in a
// file of the user's own in conf.d.
const maxSnippet = 4096

// parseSnippet accepts raw nginx directives only when snippets are on, and
// then only if they cannot leave the block they are placed in: braces
// balance, read the way nginx's tokenizer reads them (quotes, escapes,
// comments and ${var} do not count), and no "}" closes an outer block.
// Directives nginx itself rejects are nginx -t's to find.
func parseSnippet(v string, allowed bool) (string, error) {
	if !allowed {
		return "", errors.New("refused: BERTH_SNIPPETS is off")
	}
	s := strings.TrimSpace(strings.ReplaceAll(v, "\r\n", "\n"))
	switch {
	case s == "":
		return "", errors.New("empty snippet")
	case len(s) > maxSnippet:
		return "", fmt.Errorf("longer than %d bytes", maxSnippet)
	case strings.ContainsAny(s, "\x00\r"):
		return "", errors.New("contains a NUL or carriage return")
	}
	if err := checkBlocks(s); err != nil {
		return "", err
	}
	return s, nil
}

// checkBlocks scans s like nginx's ngx_conf_read_token and fails unless
// every block opened is closed and none closes a block it did not open.
func checkBlocks(s string) error {
	depth, inWord := 0, false
	for i := 0; i < len(s); i++ {
		c := s[i]
		switch {
		case c == '#' && !inWord:
			for i < len(s) && s[i] != '\n' {
				i++
			}
		case c == '\\':
			i++ // the next byte is literal
			inWord = true
		case c == '"' || c == '\'':
			end := closingQuote(s, i)
			if end < 0 {
				return fmt.Errorf("unterminated %c quote", c)
			}
			i, inWord = end, true
		case c == '$' && i+1 < len(s) && s[i+1] == '{':
			end := strings.IndexAny(s[i:], "} \t\n;")
			if end < 0 || s[i+end] != '}' {
				return errors.New("unterminated ${ variable")
			}
			i, inWord = i+end, true
		case c == '{':
			depth, inWord = depth+1, false
		case c == '}':
			if inWord {
				return errors.New(`a "}" must stand apart from the word before it`)
			}
			if depth--; depth < 0 {
				return errors.New(`a "}" closes a block the snippet did not open: a snippet may not leave its block`)
			}
		case c == ';' || c == ' ' || c == '\t' || c == '\n':
			inWord = false
		default:
			inWord = true
		}
	}
	if depth != 0 {
		return fmt.Errorf("unbalanced braces: %d block(s) left open", depth)
	}
	return nil
}

// closingQuote returns the index of the quote closing the one at s[i], or -1.
func closingQuote(s string, i int) int {
	for j := i + 1; j < len(s); j++ {
		switch s[j] {
		case '\\':
			j++
		case s[i]:
			return j
		}
	}
	return -1
}

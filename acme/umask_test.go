package acme_test

import (
	"encoding/pem"
	"syscall"
)

func syscallUmask(m int) int { return syscall.Umask(m) }

func pemDecode(b []byte) ([]byte, []byte) {
	block, rest := pem.Decode(b)
	if block == nil {
		return nil, nil
	}
	return block.Bytes, rest
}

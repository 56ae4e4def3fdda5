package agent

import (
	"crypto/aes"
	"crypto/cipher"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"fmt"
)

// Certificate files cross the overlay network inside a push, private keys
// among them. The signature proves who sent them, not who can read them,
// and Swarm's overlay encryption (IPsec) cannot be relied on everywhere,
// so each file is sealed with AES-256-GCM under a key derived from the
// shared secret. The file's path is the additional data: a sealed key
// cannot be passed off as another path's file.

// sealLabel separates this key from any other use of the secret.
const sealLabel = "berth agent certificate files\x00"

func certAEAD(secret []byte) (cipher.AEAD, error) {
	key := sha256.Sum256(append([]byte(sealLabel), secret...))
	block, err := aes.NewCipher(key[:])
	if err != nil {
		return nil, err
	}
	return cipher.NewGCM(block)
}

// sealCerts returns certs with every value sealed: base64 of nonce ‖
// ciphertext. Values are strings so the payload stays JSON.
func sealCerts(secret []byte, certs map[string]string) (map[string]string, error) {
	if len(certs) == 0 {
		return certs, nil
	}
	aead, err := certAEAD(secret)
	if err != nil {
		return nil, err
	}
	out := make(map[string]string, len(certs))
	for rel, data := range certs {
		nonce := make([]byte, aead.NonceSize())
		if _, err := rand.Read(nonce); err != nil {
			return nil, err
		}
		out[rel] = base64.StdEncoding.EncodeToString(aead.Seal(nonce, nonce, []byte(data), []byte(rel)))
	}
	return out, nil
}

// openCerts reverses sealCerts. A value that does not open (another
// secret, a value moved to another path, a changed byte) is an error
// naming its path.
func openCerts(secret []byte, sealed map[string]string) (map[string]string, error) {
	if len(sealed) == 0 {
		return sealed, nil
	}
	aead, err := certAEAD(secret)
	if err != nil {
		return nil, err
	}
	out := make(map[string]string, len(sealed))
	for rel, s := range sealed {
		raw, err := base64.StdEncoding.DecodeString(s)
		if err != nil || len(raw) < aead.NonceSize() {
			return nil, fmt.Errorf("certificate %s: not a sealed file", rel)
		}
		plain, err := aead.Open(nil, raw[:aead.NonceSize()], raw[aead.NonceSize():], []byte(rel))
		if err != nil {
			return nil, fmt.Errorf("certificate %s: does not open with the shared secret for this path", rel)
		}
		out[rel] = string(plain)
	}
	return out, nil
}

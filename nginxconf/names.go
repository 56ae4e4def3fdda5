package nginxconf

import (
	"crypto/sha256"
	"encoding/hex"
)

// maxFileName bounds a site's file name. NAME_MAX on Linux file systems
// is 255 bytes, so a 253-character host cannot simply become
// "berth-<host>.conf" (264 bytes); and every file is written through a
// temporary ".<name>.<up to 10 digits>.tmp" beside it (the atomic writer),
// which must fit too, so 16 bytes of the 255 are left for that.
const maxFileName = 255 - len("..") - 10 - len(".tmp")

// fileHashLen is how many hex digits of the host's SHA-256 a shortened file
// name carries: 64 bits, so two long hosts (even chosen by one user to
// collide) never share a file; should they, Render reports a duplicate
// instead of overwriting.
const fileHashLen = 16

// FileName is the file in the conf dir that holds host's site. It is
// FilePrefix + host + FileSuffix whenever that fits in a file name, so
// every existing file keeps its name. A longer host keeps as much of its
// start as fits, then "_" and a hash of the whole host: deterministic,
// unique, at most maxFileName bytes, still Owned, and never equal to another
// host's plain name or to DefaultFile, because no valid hostname contains
// "_" and a host never starts with one.
func FileName(host string) string { return hostFile(host, FileSuffix) }

// hostFile is FilePrefix + host + suffix, shortened as FileName says when
// it would not fit; the suffix is always kept whole, so a long host's
// other files (its htpasswd files) fit as well as its site file.
func hostFile(host, suffix string) string {
	host = fileSafe(host)
	name := FilePrefix + host + suffix
	if len(name) <= maxFileName {
		return name
	}
	sum := sha256.Sum256([]byte(host))
	keep := maxFileName - len(FilePrefix) - len("_") - fileHashLen - len(suffix)
	return FilePrefix + host[:keep] + "_" + hex.EncodeToString(sum[:])[:fileHashLen] + suffix
}

// Server-name hash sizes nginx uses when nothing sets them: a 64-byte
// bucket (the x86-64 cache line) and 512 buckets at most.
const (
	defaultHashBucketSize = 64
	defaultHashMaxSize    = 512
	// defaultHashNames is how many names nginx's defaults still place
	// without collisions at every usual name length: with one 40-character
	// name per 64-byte bucket, 32 names fit some table of at most 512
	// buckets with near certainty, 64 names fail about one time in five.
	defaultHashNames = 32
)

// hashSizes returns the server_names_hash_bucket_size and
// server_names_hash_max_size that let nginx build its server-name hash for
// hosts plus the default server's "_", and whether they must be written
// at all.
//
// nginx's rule (ngx_hash_init, 64-bit build): a name of length n takes
// 8 + align8(n+2) bytes in a bucket, and a bucket must also hold an 8-byte
// terminator, so a bucket of 64 bytes takes no name longer than 46
// characters ("could not build server_names_hash, you should increase
// server_names_hash_bucket_size"). nginx then tries table sizes from
// names/(entries per bucket) up to max_size until every name's bucket has
// room; if none fits it warns "could not build optimal server_names_hash"
// and ignores the bucket size.
//
// While the names fit nginx's defaults comfortably nothing is written, so
// an operator's own setting of these directives keeps working. Otherwise
// the bucket holds four of the longest name (plus one byte for the
// wildcard form ".example.com" nginx stores in its wildcard hashes), which
// keeps the chance that no table fits negligible, and max_size is at least
// twice the number of names, so a table with few collisions is always
// within reach. Both are powers of two, so the default file changes only
// when the names cross a threshold, and neither is below nginx's default.
func hashSizes(hosts []string) (bucketSize, maxSize int, needed bool) {
	longest := len("_")
	for _, h := range hosts {
		longest = max(longest, len(h))
	}
	names := len(hosts) + 1
	entry := hashEntry(longest + 1)
	if entry+8 <= defaultHashBucketSize && names <= defaultHashNames {
		return defaultHashBucketSize, defaultHashMaxSize, false
	}
	bucketSize = max(defaultHashBucketSize, nextPow2(8+4*entry))
	maxSize = max(defaultHashMaxSize, nextPow2(2*names))
	return bucketSize, maxSize, true
}

// hashEntry is the bytes a name of length n takes in an nginx hash bucket
// on a 64-bit build: a pointer, a length, the name, aligned to 8.
func hashEntry(n int) int { return 8 + align(n+2, 8) }

func align(n, to int) int { return (n + to - 1) / to * to }

func nextPow2(n int) int {
	p := 1
	for p < n {
		p <<= 1
	}
	return p
}

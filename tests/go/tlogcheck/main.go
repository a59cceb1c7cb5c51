// Command tlogcheck checks auditchain's signed checkpoints, receipts and proofs with Go's
// golang.org/x/mod/sumdb/note and sumdb/tlog only: a verifier nobody on the auditchain project wrote.
// It exits 0 when the input verifies, 1 when it does not, 2 on bad usage.
//
//	tlogcheck note VKEY_FILE CHECKPOINT_FILE
//	tlogcheck inclusion VKEY_FILE CHECKPOINT_FILE INDEX LEAF_DATA_HEX PROOF_FILE
//	tlogcheck consistency VKEY_FILE OLD_CHECKPOINT_FILE NEW_CHECKPOINT_FILE PROOF_FILE
//	tlogcheck receipt VKEY_FILE RECEIPT_FILE RECORD_SHA256_HEX
//
// PROOF_FILE holds one base64 hash per line. A receipt is a c2sp.org/tlog-proof@v1 file; its leaf
// data is the event's 32-byte record digest, which the caller computes from the event.
package main

import (
	"bytes"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"strconv"
	"strings"

	"golang.org/x/mod/sumdb/note"
	"golang.org/x/mod/sumdb/tlog"
)

type tree struct {
	origin string
	size   int64
	hash   tlog.Hash
}

func fail(format string, args ...interface{}) {
	fmt.Fprintf(os.Stderr, "tlogcheck: "+format+"\n", args...)
	os.Exit(1)
}

func usage() {
	fmt.Fprintln(os.Stderr, "usage: tlogcheck note|inclusion|consistency|receipt ... (see the source)")
	os.Exit(2)
}

func read(path string) []byte {
	data, err := os.ReadFile(path)
	if err != nil {
		fmt.Fprintf(os.Stderr, "tlogcheck: %v\n", err)
		os.Exit(2)
	}
	return data
}

// openCheckpoint verifies a signed checkpoint with note.Open and parses its three lines.
func openCheckpoint(vkeyFile string, signed []byte) (tree, error) {
	verifier, err := note.NewVerifier(strings.TrimSpace(string(read(vkeyFile))))
	if err != nil {
		fmt.Fprintf(os.Stderr, "tlogcheck: verifier key: %v\n", err)
		os.Exit(2)
	}
	n, err := note.Open(signed, note.VerifierList(verifier))
	if err != nil {
		return tree{}, err
	}
	lines := strings.Split(strings.TrimSuffix(n.Text, "\n"), "\n")
	if len(lines) != 3 {
		return tree{}, fmt.Errorf("checkpoint has %d lines, want 3", len(lines))
	}
	size, err := strconv.ParseInt(lines[1], 10, 64)
	if err != nil || size < 0 || strconv.FormatInt(size, 10) != lines[1] {
		return tree{}, fmt.Errorf("bad tree size %q", lines[1])
	}
	root, err := base64.StdEncoding.DecodeString(lines[2])
	if err != nil || len(root) != tlog.HashSize {
		return tree{}, fmt.Errorf("bad root hash %q", lines[2])
	}
	var h tlog.Hash
	copy(h[:], root)
	return tree{lines[0], size, h}, nil
}

func parseHashes(lines []string) ([]tlog.Hash, error) {
	var hashes []tlog.Hash
	for _, line := range lines {
		raw, err := base64.StdEncoding.DecodeString(line)
		if err != nil || len(raw) != tlog.HashSize {
			return nil, fmt.Errorf("bad proof hash %q", line)
		}
		var h tlog.Hash
		copy(h[:], raw)
		hashes = append(hashes, h)
	}
	return hashes, nil
}

func proofFile(path string) []tlog.Hash {
	text := strings.TrimSpace(string(read(path)))
	var lines []string
	if text != "" {
		lines = strings.Split(text, "\n")
	}
	hashes, err := parseHashes(lines)
	if err != nil {
		fail("%v", err)
	}
	return hashes
}

func leafData(hexText string) []byte {
	data, err := hex.DecodeString(hexText)
	if err != nil {
		fmt.Fprintf(os.Stderr, "tlogcheck: leaf data is not hex\n")
		os.Exit(2)
	}
	return data
}

func checkInclusion(t tree, index int64, data []byte, proof []tlog.Hash) {
	if err := tlog.CheckRecord(tlog.RecordProof(proof), t.size, t.hash, index, tlog.RecordHash(data)); err != nil {
		fail("inclusion: %v", err)
	}
}

// parseReceipt reads a c2sp.org/tlog-proof@v1 file: header, optional extra, index, proof, blank line,
// signed checkpoint.
func parseReceipt(data []byte) (int64, []tlog.Hash, []byte, error) {
	i := bytes.Index(data, []byte("\n\n"))
	if i < 0 {
		return 0, nil, nil, errors.New("receipt: no blank line before the checkpoint")
	}
	lines := strings.Split(string(data[:i]), "\n")
	if lines[0] != "c2sp.org/tlog-proof@v1" {
		return 0, nil, nil, errors.New("receipt: bad header")
	}
	lines = lines[1:]
	if len(lines) > 0 && strings.HasPrefix(lines[0], "extra ") {
		lines = lines[1:]
	}
	if len(lines) == 0 || !strings.HasPrefix(lines[0], "index ") {
		return 0, nil, nil, errors.New("receipt: no index line")
	}
	index, err := strconv.ParseInt(strings.TrimPrefix(lines[0], "index "), 10, 64)
	if err != nil || index < 0 {
		return 0, nil, nil, errors.New("receipt: bad index")
	}
	proof, err := parseHashes(lines[1:])
	if err != nil {
		return 0, nil, nil, err
	}
	return index, proof, data[i+2:], nil
}

func main() {
	if len(os.Args) < 2 {
		usage()
	}
	args := os.Args[2:]
	switch os.Args[1] {
	case "note":
		if len(args) != 2 {
			usage()
		}
		t, err := openCheckpoint(args[0], read(args[1]))
		if err != nil {
			fail("checkpoint: %v", err)
		}
		fmt.Printf("%s %d %x\n", t.origin, t.size, t.hash[:])
	case "inclusion":
		if len(args) != 5 {
			usage()
		}
		t, err := openCheckpoint(args[0], read(args[1]))
		if err != nil {
			fail("checkpoint: %v", err)
		}
		index, err := strconv.ParseInt(args[2], 10, 64)
		if err != nil {
			usage()
		}
		checkInclusion(t, index, leafData(args[3]), proofFile(args[4]))
	case "consistency":
		if len(args) != 4 {
			usage()
		}
		old, err := openCheckpoint(args[0], read(args[1]))
		if err != nil {
			fail("old checkpoint: %v", err)
		}
		cur, err := openCheckpoint(args[0], read(args[2]))
		if err != nil {
			fail("new checkpoint: %v", err)
		}
		if old.origin != cur.origin {
			fail("checkpoints of two logs: %q and %q", old.origin, cur.origin)
		}
		if err := tlog.CheckTree(tlog.TreeProof(proofFile(args[3])), cur.size, cur.hash, old.size, old.hash); err != nil {
			fail("consistency: %v", err)
		}
	case "receipt":
		if len(args) != 3 {
			usage()
		}
		index, proof, signed, err := parseReceipt(read(args[1]))
		if err != nil {
			fail("%v", err)
		}
		t, err := openCheckpoint(args[0], signed)
		if err != nil {
			fail("checkpoint: %v", err)
		}
		checkInclusion(t, index, leafData(args[2]), proof)
	default:
		usage()
	}
}

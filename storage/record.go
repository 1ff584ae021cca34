package storage

import (
	"encoding/binary"
	"errors"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/apitokens/caddy-api-tokens/storage/secret"
)

// tokenRecord is a token as stored under t/<id>: its metadata and the
// SHA-256 of its secret. It never leaves the package; callers get Token.
type tokenRecord struct {
	Token
	Hash secret.Hash
}

// Token records are stored in a small binary form rather than JSON because
// every node decodes every one of them to load the verifier at start (see
// subscriber.go), and with a million tokens JSON decoding dominated the
// start-up time.
//
//	version(1) kind(1) hash(32) created(8) expires(8) revoked(8, 0 = none)
//	then uvarint-length-prefixed: id, user, name, created_by, rotated_to,
//	scopes (space-separated), allowed networks (space-separated)
//
// Records written before scopes existed end after rotated_to: they read
// as a token with no scope, usable from any network.
const tokenRecordV1 = 1

// The length-prefixed fields of a record, in order.
const (
	fieldID = iota
	fieldUser
	fieldName
	fieldCreatedBy
	fieldRotatedTo
	fieldScopes
	fieldNetworks
	recordFields
	// fieldsBeforeScopes is how many fields a record written before
	// scopes holds.
	fieldsBeforeScopes = fieldScopes
)

const (
	kindByteTemporary = 1
	kindBytePermanent = 2
)

var errBadRecord = errors.New("storage: corrupt token record")

func (r *tokenRecord) marshal() []byte {
	scopes, networks := strings.Join(r.Scopes, " "), strings.Join(r.AllowedCIDRs, " ")
	b := make([]byte, 0, 2+32+24+recordFields*2+len(r.ID)+len(r.User)+len(r.Name)+len(r.CreatedBy)+len(r.RotatedTo)+len(scopes)+len(networks))
	b = append(b, tokenRecordV1, kindByte(r.Kind))
	b = append(b, r.Hash[:]...)
	b = binary.BigEndian.AppendUint64(b, uint64(r.CreatedAt.UnixNano()))
	b = binary.BigEndian.AppendUint64(b, uint64(r.ExpiresAt.UnixNano()))
	var revoked int64
	if r.RevokedAt != nil {
		revoked = r.RevokedAt.UnixNano()
	}
	b = binary.BigEndian.AppendUint64(b, uint64(revoked))
	for _, s := range [recordFields]string{r.ID, r.User, r.Name, r.CreatedBy, r.RotatedTo, scopes, networks} {
		b = binary.AppendUvarint(b, uint64(len(s)))
		b = append(b, s...)
	}
	return b
}

// recordHeader is the fixed part of a record: what loading the verifier
// needs without allocating the strings it does not use.
type recordHeader struct {
	kind                      TokenKind
	hash                      secret.Hash
	created, expires, revoked int64
	rest                      []byte // the length-prefixed strings
}

const headerLen = 2 + 32 + 24

func parseHeader(b []byte) (recordHeader, error) {
	var h recordHeader
	if len(b) < headerLen || b[0] != tokenRecordV1 {
		return h, errBadRecord
	}
	switch b[1] {
	case kindByteTemporary:
		h.kind = Temporary
	case kindBytePermanent:
		h.kind = Permanent
	default:
		return h, errBadRecord
	}
	copy(h.hash[:], b[2:34])
	h.created = int64(binary.BigEndian.Uint64(b[34:]))
	h.expires = int64(binary.BigEndian.Uint64(b[42:]))
	h.revoked = int64(binary.BigEndian.Uint64(b[50:]))
	h.rest = b[headerLen:]
	return h, nil
}

// fields reads the record's length-prefixed fields into out; those of a
// record written before scopes are left empty.
func (h *recordHeader) fields(out *[recordFields][]byte) error {
	rest := h.rest
	for i := range out {
		if i == fieldsBeforeScopes && len(rest) == 0 {
			break
		}
		var err error
		if out[i], rest, err = nextField(rest); err != nil {
			return err
		}
	}
	return nil
}

// nextField returns the next length-prefixed field and what follows it.
func nextField(b []byte) (field, rest []byte, err error) {
	n, k := binary.Uvarint(b)
	if k <= 0 || uint64(len(b)-k) < n {
		return nil, nil, errBadRecord
	}
	return b[k : k+int(n)], b[k+int(n):], nil
}

func unmarshalToken(b []byte) (tokenRecord, error) {
	h, err := parseHeader(b)
	if err != nil {
		return tokenRecord{}, err
	}
	var f [recordFields][]byte
	if err := h.fields(&f); err != nil {
		return tokenRecord{}, err
	}
	r := tokenRecord{Hash: h.hash, Token: Token{
		ID: string(f[fieldID]), User: string(f[fieldUser]), Name: string(f[fieldName]), Kind: h.kind,
		CreatedAt: nanosTime(h.created), CreatedBy: string(f[fieldCreatedBy]),
		ExpiresAt: nanosTime(h.expires), RotatedTo: string(f[fieldRotatedTo]),
		Scopes: splitList(f[fieldScopes]), AllowedCIDRs: splitList(f[fieldNetworks]),
	}}
	if h.revoked != 0 {
		t := nanosTime(h.revoked)
		r.RevokedAt = &t
	}
	return r, nil
}

// splitList splits a space-separated field; never nil, so JSON says [].
func splitList(b []byte) []string {
	return orEmpty(strings.Fields(string(b)))
}

func kindByte(k TokenKind) byte {
	if k == Temporary {
		return kindByteTemporary
	}
	return kindBytePermanent
}

// short cuts user input echoed in an error message to a readable length.
func short(s string) string {
	const limit = 64
	if len(s) <= limit {
		return s
	}
	cut := limit
	for cut > 0 && !utf8.RuneStart(s[cut]) {
		cut--
	}
	return s[:cut] + "…"
}

func nanosTime(n int64) time.Time { return time.Unix(0, n).UTC() }

// userRecord is a user as stored under u/<name>. PasswordHash never leaves
// the package; callers get User.
type userRecord struct {
	User
	PasswordHash []byte `json:"password_hash"`
}

// recordUser returns the user field of a record, nil if it is corrupt.
func recordUser(val []byte) []byte {
	tok, err := verifierToken(val)
	if err != nil {
		return nil
	}
	return tok.User
}

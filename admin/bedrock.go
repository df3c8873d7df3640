package admin

import (
	"context"
	"net/http"
	"regexp"

	"github.com/google/uuid"

	"github.com/ccproxy/ccproxy/internal/store"
)

// bedrockRequest is the body of PUT …/bedrock. APIKey is write-only.
type bedrockRequest struct {
	Type   string  `json:"type"`
	APIKey *string `json:"api_key"`
	Region string  `json:"region"`
}

// bedrockAudit is what the audit log records of a credential: never the key.
type bedrockAudit struct {
	Type   string `json:"type"`
	Region string `json:"region"`
}

var regionRE = regexp.MustCompile(`^[a-z]{2}(-[a-z]+)+-[0-9]{1,2}$`)

func (req bedrockRequest) validate() []fieldError {
	var errs []fieldError
	switch store.CredentialKind(req.Type) {
	case store.CredentialAPIKey:
		if req.APIKey == nil || *req.APIKey == "" || len(*req.APIKey) > 4096 || containsControlOrSpace(*req.APIKey) {
			errs = append(errs, fieldError{Field: "api_key", Message: "required for type api_key: 1 to 4096 printable characters"})
		}
	case store.CredentialAWSDefaultChain:
		if req.APIKey != nil {
			errs = append(errs, fieldError{Field: "api_key", Message: "not allowed for type aws_default_chain"})
		}
	default:
		errs = append(errs, fieldError{Field: "type", Message: "must be api_key or aws_default_chain"})
	}
	if !regionRE.MatchString(req.Region) {
		errs = append(errs, fieldError{Field: "region", Message: "must be an AWS region such as us-east-1"})
	}
	return errs
}

// CredentialAAD is the associated data Bedrock API keys are sealed with
// (secrets.Sealer), for whoever opens them (extproc). It binds the blob to
// the user rather than to the row or key, because key rotation copies a
// key's credential to the new key.
func CredentialAAD(userID uuid.UUID) []byte {
	return []byte("ccproxy/bedrock-credential/user/" + userID.String())
}

func containsControlOrSpace(s string) bool {
	for _, r := range s {
		if r <= ' ' || r == 0x7f {
			return true
		}
	}
	return false
}

func (s *Server) handlePutUserBedrock(w http.ResponseWriter, r *http.Request) {
	s.putBedrock(w, r, false)
}

func (s *Server) handlePutKeyBedrock(w http.ResponseWriter, r *http.Request) {
	s.putBedrock(w, r, true)
}

func (s *Server) handleDeleteUserBedrock(w http.ResponseWriter, r *http.Request) {
	s.deleteBedrock(w, r, false)
}

func (s *Server) handleDeleteKeyBedrock(w http.ResponseWriter, r *http.Request) {
	s.deleteBedrock(w, r, true)
}

// ownerOf resolves the user a credential belongs to and the keys whose
// lookups it changes.
func ownerOf(ctx context.Context, q *store.Queries, id uuid.UUID, forKey bool) (uuid.UUID, []store.AccessKey, error) {
	if forKey {
		k, err := q.AccessKeys().Get(ctx, id)
		if err != nil {
			return uuid.Nil, nil, err
		}
		return k.UserID, []store.AccessKey{k}, nil
	}
	if _, err := q.Users().Get(ctx, id); err != nil {
		return uuid.Nil, nil, err
	}
	ks, err := q.AccessKeys().ListByUser(ctx, id)
	return id, ks, err
}

func (s *Server) putBedrock(w http.ResponseWriter, r *http.Request, forKey bool) {
	id, ok := s.pathID(w, r)
	if !ok {
		return
	}
	var req bedrockRequest
	if !s.decode(w, r, &req) {
		return
	}
	if errs := req.validate(); len(errs) > 0 {
		s.invalid(w, r, errs)
		return
	}
	target, action := "user", "bedrock.user.put"
	if forKey {
		target, action = "access_key", "bedrock.key.put"
	}
	var (
		userID uuid.UUID
		ks     []store.AccessKey
	)
	err := s.st.WithTx(r.Context(), func(q *store.Queries) error {
		var err error
		if userID, ks, err = ownerOf(r.Context(), q, id, forKey); err != nil {
			return err
		}
		in := store.CredentialInput{Kind: store.CredentialKind(req.Type), Region: req.Region}
		if in.Kind == store.CredentialAPIKey {
			if in.SecretCiphertext, err = s.sealer.Seal(r.Context(), []byte(*req.APIKey), CredentialAAD(userID)); err != nil {
				return err
			}
		}
		var before *bedrockAudit
		var prev store.BedrockCredential
		if forKey {
			prev, err = q.Credentials().GetForKey(r.Context(), id)
		} else {
			prev, err = q.Credentials().GetForUser(r.Context(), id)
		}
		if err == nil {
			before = &bedrockAudit{Type: string(prev.Kind), Region: prev.Region}
		}
		if forKey {
			_, err = q.Credentials().PutForKey(r.Context(), id, in)
		} else {
			_, err = q.Credentials().PutForUser(r.Context(), id, in)
		}
		if err != nil {
			return err
		}
		var b any
		if before != nil {
			b = before
		}
		return s.audit(r.Context(), q, action, target, id.String(), b, bedrockAudit{Type: req.Type, Region: req.Region})
	})
	if err != nil {
		s.storeError(w, r, err)
		return
	}
	if !s.invalidateOrUnavailable(w, r, keysInvalidation(userID, ks)) {
		return
	}
	w.WriteHeader(http.StatusNoContent)
}

func (s *Server) deleteBedrock(w http.ResponseWriter, r *http.Request, forKey bool) {
	id, ok := s.pathID(w, r)
	if !ok {
		return
	}
	target, action := "user", "bedrock.user.delete"
	if forKey {
		target, action = "access_key", "bedrock.key.delete"
	}
	var (
		userID uuid.UUID
		ks     []store.AccessKey
	)
	err := s.st.WithTx(r.Context(), func(q *store.Queries) error {
		var err error
		if userID, ks, err = ownerOf(r.Context(), q, id, forKey); err != nil {
			return err
		}
		var prev store.BedrockCredential
		if forKey {
			prev, err = q.Credentials().GetForKey(r.Context(), id)
		} else {
			prev, err = q.Credentials().GetForUser(r.Context(), id)
		}
		if err != nil {
			return err
		}
		if forKey {
			err = q.Credentials().DeleteForKey(r.Context(), id)
		} else {
			err = q.Credentials().DeleteForUser(r.Context(), id)
		}
		if err != nil {
			return err
		}
		return s.audit(r.Context(), q, action, target, id.String(), bedrockAudit{Type: string(prev.Kind), Region: prev.Region}, nil)
	})
	if err != nil {
		s.storeError(w, r, err)
		return
	}
	if !s.invalidateOrUnavailable(w, r, keysInvalidation(userID, ks)) {
		return
	}
	w.WriteHeader(http.StatusNoContent)
}

package verifier

import "sync/atomic"

// User is what the verifier keeps of a user.
type User struct {
	Name     string
	Admin    bool
	Disabled bool
	// Scopes is the most the user's tokens may carry: scope names,
	// space-separated. An administrator's ceiling is every scope.
	Scopes string
}

// userTable numbers the users for the slots. Every method runs under
// table.writeMu (or in a Load), except at, which Verify calls for a number
// it found in a slot (published after the user's entry, so no lock is
// needed).
type userTable struct {
	byName map[string]*userState
	byNum  arena[atomic.Pointer[userState]]
}

// userState is shared by all of a user's tokens, so disabling or promoting
// a user is one atomic store that the very next Verify sees.
type userState struct {
	name   string
	num    uint32
	flags  atomic.Uint32
	scopes atomic.Uint64 // the ceiling's mask
}

const (
	flagAdmin uint32 = 1 << iota
	flagDisabled
	// flagDeleted marks a deleted user whose tokens are still in the
	// table (the database deletes them in batches after the user): they
	// verify as unknown, as they will once removed.
	flagDeleted
)

func userFlags(u User) uint32 {
	var f uint32
	if u.Admin {
		f |= flagAdmin
	}
	if u.Disabled {
		f |= flagDisabled
	}
	return f
}

// put adds a user under a new number, or changes the flags and ceiling
// of a known one.
func (t *userTable) put(u User, g *grants) {
	ceiling := g.maskOf([]byte(u.Scopes))
	if st := t.byName[u.Name]; st != nil {
		st.scopes.Store(ceiling)
		st.flags.Store(userFlags(u))
		return
	}
	st := &userState{name: u.Name, num: t.byNum.alloc()}
	st.scopes.Store(ceiling)
	st.flags.Store(userFlags(u))
	t.byNum.at(st.num).Store(st)
	t.byName[u.Name] = st
}

// forget drops a deleted user's name. Its number is not reused: it points
// at a deleted state from now on, so the user's tokens, which stay in the
// table until their removals arrive, verify as unknown, and a user
// created again under the name gets a new number.
func (t *userTable) forget(name string) {
	if st := t.byName[name]; st != nil {
		st.flags.Store(flagDeleted) // for hot entries, which hold the state itself
		t.byNum.at(st.num).Store(deletedUser)
		delete(t.byName, name)
	}
}

var deletedUser = func() *userState {
	st := &userState{}
	st.flags.Store(flagDeleted)
	return st
}()

func (t *userTable) at(num uint32) *userState { return t.byNum.at(num).Load() }

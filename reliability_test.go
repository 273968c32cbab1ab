package claudepool

import (
	"os"
	"path/filepath"
	"testing"

	"github.com/claudepool/claudepool/internal/fakecli"
	"github.com/stretchr/testify/require"
)

func TestStreamChatCLIExitsZeroAtStart(t *testing.T) {
	// A CLI that exits 0 before answering anything ended without a
	// result: the caller gets an *ExitError like for any other code.
	ctx := testCtx(t)
	fp := newFakePool(t, Config{}, fakecli.EnvMode+"="+fakecli.ModeExitEarly, fakecli.EnvExitCode+"=0")
	s, err := NewAdapter(fp.Pool).StreamChat(ctx, userMsg("x"))
	require.NoError(t, err)
	defer s.Close()
	require.False(t, s.Next())
	var ee *ExitError
	require.ErrorAs(t, s.Err(), &ee)
	require.Equal(t, 0, ee.Code)
	require.Contains(t, ee.Stderr, "fatal: fake start-up failure")
	require.ErrorContains(t, s.Err(), "exited before answering initialize")
}

func TestSpawnExecFormatErrorIsCLINotFound(t *testing.T) {
	// A CLI file that is executable but not a program could not be run:
	// ErrCLINotFound, like a missing one.
	ctx := testCtx(t)
	cli := filepath.Join(t.TempDir(), "claude")
	require.NoError(t, os.WriteFile(cli, []byte("\x7fELF but not really a program\n"), 0o755))
	fp := newFakePool(t, Config{Command: cli})
	_, err := NewAdapter(fp.Pool).StreamChat(ctx, userMsg("x"))
	requireErrorIs(t, err, ErrCLINotFound)
	require.ErrorContains(t, err, "exec format error")
}

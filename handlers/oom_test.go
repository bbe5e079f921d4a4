package handlers

import (
	"context"
	"errors"
	"reflect"
	"testing"

	"gpu-worker/engine"
)

func TestRunWithOOMRetryHalvesBatch(t *testing.T) {
	const fits = 3 // batches above this run out of memory
	var calls [][2]int
	run := func(b, a int) error {
		calls = append(calls, [2]int{b, a})
		if b > fits {
			return &engine.Error{Message: "CUDA out of memory", Kind: "oom"}
		}
		return nil
	}
	var notes [][2]int
	err := runWithOOMRetry(context.Background(), run, 16, 1, 4, func(b, a int) { notes = append(notes, [2]int{b, a}) })
	if err != nil {
		t.Fatal(err)
	}
	want := [][2]int{{16, 1}, {8, 2}, {4, 4}, {2, 8}}
	if !reflect.DeepEqual(calls, want) {
		t.Errorf("calls %v, want %v", calls, want)
	}
	for _, c := range calls {
		if c[0]*c[1] != 16 {
			t.Errorf("effective batch changed: %v", c)
		}
	}
	if !reflect.DeepEqual(notes, want[1:]) {
		t.Errorf("retry notes %v", notes)
	}
}

func TestRunWithOOMRetryLimits(t *testing.T) {
	calls := 0
	oom := func(int, int) error { calls++; return &engine.Error{Message: "oom", Kind: "oom"} }
	err := runWithOOMRetry(context.Background(), oom, 8, 1, 2, nil)
	if !engine.IsOOM(err) || calls != 3 {
		t.Errorf("after the limit: calls %d err %v", calls, err)
	}
	calls = 0
	err = runWithOOMRetry(context.Background(), oom, 1, 1, 5, nil)
	if !engine.IsOOM(err) || calls != 1 {
		t.Errorf("batch 1 cannot halve: calls %d err %v", calls, err)
	}
	calls = 0
	other := errors.New("dataset empty")
	err = runWithOOMRetry(context.Background(), func(int, int) error { calls++; return other }, 8, 1, 3, nil)
	if !errors.Is(err, other) || calls != 1 {
		t.Errorf("other errors are not retried: calls %d err %v", calls, err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	calls = 0
	err = runWithOOMRetry(ctx, oom, 8, 1, 3, nil)
	if err == nil || calls != 1 {
		t.Errorf("canceled context: calls %d err %v", calls, err)
	}
}

"""Every status and drop reason the pipeline writes, in one place.

Verdicts go into ``res.status`` of verified files; ``SUCCESS`` is the only passing one.
Drop and failure reasons are the keys of each step's summary line.
"""

# --- verdicts of verify.py (res.status) and job statuses of the executor -------------
SUCCESS = "success"                # prediction checked and correct / job ran to a JSON value
WRONG_ANSWER = "wrong_answer"      # prediction parsed and checked, but wrong
NO_ANSWER = "no_answer"            # no usable JSON answer could be extracted from the model's text
BAD_ANSWER = "bad_answer"          # older files only: verify no longer writes it (a non-object
                                   # "input" is now passed as the one argument)
EXCEPTION = "exception"            # the code raised (type and message in the message)
TIMEOUT = "timeout"                # used its whole CPU budget: final on any machine (res.limit
                                   # == LIMIT_CPU; without it: another tool's wall-clock limit)
WALL_TIMEOUT = "wall_timeout"      # stopped computing (slept, blocked, stopped) past the backstop:
                                   # may come from load, re-checked by pipeline_check
RESOURCE_LIMIT = "resource_limit"  # memory, processes, file size, open files, output size
CRASHED = "crashed"                # killed by a signal we did not send
NON_JSON = "non_json_output"       # returned a value that is not plain JSON (set, NaN, ndarray,
                                   # a lone surrogate ...: compare.json_problem)
NOT_RUNNABLE = "not_runnable"      # the code could not be run at all (syntax error, missing function, no record)

VERDICTS = (SUCCESS, WRONG_ANSWER, NO_ANSWER, BAD_ANSWER, EXCEPTION, TIMEOUT,
            WALL_TIMEOUT, RESOURCE_LIMIT, CRASHED, NON_JSON, NOT_RUNNABLE)
# res.limit of a TIMEOUT verdict of ours: the CPU budget was used up (never re-checked).
LIMIT_CPU = "cpu"
# The --recheck keyword of verify.py for the verdicts load on the machine could have caused
# (WALL_TIMEOUT, and a TIMEOUT without res.limit == LIMIT_CPU, which another tool wrote under
# a wall-clock limit), re-checked with fewer workers by scripts/pipeline_check.sh. Which
# verdicts those are is decided in one place: verification.load_dependent.
RECHECK_LOAD = "load"

# Verdicts in files written by the original implementation. Every step reads them with the
# meaning they have there: only "success" passes (the same string as ours), "timeout" (the
# same string too) is re-checked, the others are final failures that get a second turn;
# "no answer" is the method's no-answer verdict (the second turn asks for the format).
ORIG_FAILED = "failed"
ORIG_NO_ANSWER = "no answer"
ORIG_ERROR = "error"
ORIG_ASSERTION = "AssertionError"
ORIGINAL_VERDICTS = (SUCCESS, ORIG_FAILED, ORIG_NO_ANSWER, TIMEOUT, EXCEPTION, ORIG_ERROR,
                     ORIG_ASSERTION)
NO_ANSWER_VERDICTS = (NO_ANSWER, ORIG_NO_ANSWER)

# --- drop reasons of parse_gen_ios.py -------------------------------------------------
KEPT = "kept"
DROP_NO_OUTPUT = "dropped_no_output"            # inference record without a usable "output"
DROP_MISSING_SECTION = "dropped_missing_section"
DROP_NO_MAIN = "dropped_no_main_solution"
DROP_NO_GENERATOR = "dropped_no_input_generator"
DROP_GEN_FAILED = "dropped_generator_failed"
DROP_FEW_IOS = "dropped_too_few_ios"
# per-pair drop reasons (counted, the sample may still be kept)
PAIR_NOT_REPRODUCIBLE = "pair_not_reproducible"
PAIR_TOO_LARGE = "pair_too_large"
PAIR_DUPLICATE = "pair_duplicate"
PAIR_NON_JSON = "pair_non_json"
PAIR_ERROR = "pair_error"

# --- inference failure reasons (batched_api_inference.py, <output>.failed.jsonl) ------
FAIL_LENGTH = "length"                  # finish_reason "length": truncated answer
FAIL_CONTENT_FILTER = "content_filter"
FAIL_EMPTY = "empty_answer"
FAIL_RATE_LIMIT = "rate_limited"
FAIL_SERVER = "server_error"
FAIL_CONNECTION = "connection_error"
FAIL_TIMEOUT = "request_timeout"
FAIL_BAD_REQUEST = "bad_request"
FAIL_AUTH = "auth_error"
FAIL_NOT_FOUND = "not_found"
FAIL_OTHER = "other_error"

# --- prompt-building and assembly steps (build_transform_msg, build_spec_msg,
#     build_spec_rev_msg, assemble_spec_demo): summary keys --------------------------
SKIP_BAD_LINE = "skipped_bad_line"              # torn / invalid JSON line (read_jsonl skipped it)
REJECTED = "rejected"                           # verify.py: gens line that is not a JSON object,
                                                # written to the rejects file
SKIP_EMPTY_CONTENT = "skipped_empty_content"    # raw record whose "content" is blank
SKIP_NO_IOS = "skipped_no_ios"                  # parsed sample with an empty "ios" list
SKIP_PASSED = "skipped_passed"                  # verified record that already passed: no revision
SKIP_NO_ANSWER_TEXT = "skipped_no_model_output"  # verified record without a model answer to revise
SKIP_NOT_RUNNABLE = "skipped_not_runnable"         # verdict not_runnable: the pipeline's fault, not the model's
KEPT_TURN1 = "kept_turn1_pass"                  # final record: passed in turn 1
KEPT_TURN2 = "kept_turn2_pass"                  # final record: failed turn 1, passed turn 2
KEPT_FAILED = "kept_turn2_failed"               # final record: failed turn 1 and turn 2 (kept,
                                                # as the method does, "failed": true)
DROP_BOTH_FAILED = "dropped_both_failed"        # failed turn 1 and turn 2, with --drop_failed
DROP_NO_TURN2 = "dropped_no_turn2"              # failed turn 1 and has no turn-2 record
DUPLICATE_ID = "skipped_duplicate_id"           # a second record with an id already seen
TURN2_UNMATCHED = "turn2_unmatched"             # turn-2 record whose original_id is no turn-1 failure

# --- inference (batched_api_inference.py): added by the inference helper ---------------
FAIL_BAD_INPUT = "bad_input"            # input line not JSON, not an object, or without usable
                                        # "messages" (jsonl.messages_problem)
INFERENCE_SUCCEEDED = "succeeded"       # summary key of answered rows
# batch mode (--batch_api): requests that a Batch API did not answer; a rerun resubmits them
FAIL_BATCH_EXPIRED = "batch_expired"    # not processed within the completion window
FAIL_BATCH_CANCELLED = "batch_cancelled"  # the batch was cancelled before this request ran
FAIL_BATCH_FAILED = "batch_failed"      # the whole batch failed (e.g. its file did not validate)
FAIL_NO_RESULT = "no_result"            # a finished batch returned no line for this request

# --- parse_gen_ios.py and verify.py: summary keys ---------------------------------------
PAIRS_KEPT = "pairs_kept"                       # I/O pairs written in kept samples
SKIP_DONE = "skipped_done"                      # sample already in the output / dropped file (resume)
REUSED = "reused"                               # verdict copied from an earlier verified file
EXECUTIONS = "executions"                       # reference-code runs started by verify.py
CACHE_HITS = "cache_hits"                       # input predictions answered from the execution cache
VIEW_UNRESTRICTED = "jobs_see_whole_file_system"   # summary: the kernel refused namespaces
SYSCALLS_UNFILTERED = "jobs_syscalls_unfiltered"   # summary: no system-call filter in jobs
RECORDED_HITS = "recorded_hits"                 # input predictions equal to a recorded input: not run

# --- report.py (funnel gaps: records of a stage that no file of the next one accounts for)
GAP_NOT_BUILT = "not_built"                          # raw file without a transform prompt
GAP_NO_RESPONSE = "no_response_recorded"             # prompt neither answered nor failed
GAP_NO_PARSE_RECORD = "no_parse_record"              # unified response neither kept nor dropped
GAP_NOT_VERIFIED = "not_verified"                    # answer without a verdict
GAP_NOT_IN_FINAL = "failed_both_turns_or_not_revised"  # turn-1 prediction missing from the final file

# --- export.py: summary keys -----------------------------------------------------------
EXPORTED_SINGLE = "exported_single_turn"    # turn 1 passed: prompt -> turn_1
EXPORTED_MULTI = "exported_multi_turn"      # revised: prompt -> turn_1 -> feedback -> turn_2
EXPORTED_TURN2_ONLY = "exported_turn2_only"  # revised, --drop_feedback: prompt -> turn_2
SKIP_FAILED = "skipped_failed"              # final record marked "failed": true
SKIP_EMPTY_TEXT = "skipped_empty_text"      # a turn with no text: trainers reject it
TIP_REMOVED = "tip_removed"
TIP_NOT_FOUND = "tip_not_found"             # --drop_tip, but the prompt has no tip: kept as is

# --- executor.py / parse_gen_ios.py: failures of the executor itself, not of the code ----
EXECUTOR_ERROR = "executor_error"   # error_type of a NOT_RUNNABLE JobResult/GenResult whose
                                    # sandbox worker died or failed: running it again may work
RETRY_LATER = "retry_later"         # parse_gen_ios summary: sample left unwritten after an
                                    # executor error (no drop record): a rerun retries it

"""Every status and drop reason the pipeline writes, in one place.

Verdicts go into ``res.status`` of verified files; ``SUCCESS`` is the only passing one.
Drop and failure reasons are the keys of each step's summary line.
"""

# --- verdicts of verify.py (res.status) and job statuses of the executor -------------
SUCCESS = "success"                # prediction checked and correct / job ran to a JSON value
WRONG_ANSWER = "wrong_answer"      # prediction parsed and checked, but wrong
NO_ANSWER = "no_answer"            # no usable JSON answer could be extracted from the model's text
BAD_ANSWER = "bad_answer"          # JSON found but of the wrong shape (e.g. "input" is not an object)
EXCEPTION = "exception"            # the code raised (type and message in the message)
TIMEOUT = "timeout"                # wall-clock or CPU time limit
RESOURCE_LIMIT = "resource_limit"  # memory, processes, file size, open files, output size
CRASHED = "crashed"                # killed by a signal we did not send
NON_JSON = "non_json_output"       # returned a value that is not plain JSON (set, NaN, ndarray, ...)
NOT_RUNNABLE = "not_runnable"      # the code could not be run at all (syntax error, missing function, no record)

VERDICTS = (SUCCESS, WRONG_ANSWER, NO_ANSWER, BAD_ANSWER, EXCEPTION, TIMEOUT,
            RESOURCE_LIMIT, CRASHED, NON_JSON, NOT_RUNNABLE)
# Verdicts worth re-checking with fewer workers (scripts/pipeline_check.sh).
RETRYABLE = (TIMEOUT,)

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

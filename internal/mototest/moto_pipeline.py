"""moto for internal/mototest: S3, Secrets Manager, Lambda and Step Functions
in one process on loopback, with state machines really executed by moto's
Step Functions interpreter (LocalStack's, under moto/stepfunctions/parser).

    python3 moto_pipeline.py INVOKE_URL

Prints "READY http://127.0.0.1:PORT" once moto answers, then serves until its
standard input closes: the Go test holds the other end, so moto ends with the
test even when the test is killed. On standard output it then writes a line
"S3EVENT {...}" for every object version created in moto's S3
(report_object_created), and answers each line "SYNC n" it reads with
"SYNCED n", after every event line of an object written before.

moto is changed in three named functions below, and nowhere else:
  * route_lambda_invokes: moto's Lambda runs functions only in Docker; here
    every invocation of a function is posted to INVOKE_URL/<function name>,
    where the test runs the real bootstrap, and answered as Lambda answers.
  * report_object_created: S3's event notifications, handed to the test.
  * work_around_moto_gaps: where moto's interpreter differs from AWS Step
    Functions on what segpilot's definition uses, it is made to do what AWS
    does. Each workaround cites the moto file and says what AWS does.
The definition the test deploys is the template's, unmodified.
"""

import copy
import json
import logging
import os
import sys
import threading
import urllib.request


def route_lambda_invokes(invoke_url):
    """moto/awslambda/models.py, LambdaFunction._invoke_lambda, runs a
    function in a Docker container (none here). Instead, post the event to
    the test's invoke endpoint for that function, which runs the bootstrap
    under aws-lambda-rie and answers with the function's response, plus an
    X-Amz-Function-Error header when the handler returned an error (as
    Lambda's Invoke API does). moto's invoke then answers the caller (the
    interpreter's lambda:invoke task) exactly as Lambda would."""
    from moto.awslambda.models import LambdaFunction

    def _invoke_lambda(self, event=None):
        if event is None:
            event = "{}"
        if not isinstance(event, (str, bytes)):
            event = json.dumps(event)
        if isinstance(event, str):
            event = event.encode("utf-8")
        req = urllib.request.Request(
            invoke_url.rstrip("/") + "/" + self.function_name,
            data=event,
            method="POST",
            headers={"Content-Type": "application/json"},
        )
        # The test enforces the function's timeout; this only stops a lost
        # answer from holding the interpreter's thread forever.
        with urllib.request.urlopen(req, timeout=int(self.timeout) + 60) as resp:
            body = resp.read().decode("utf-8")
            errored = bool(resp.headers.get("X-Amz-Function-Error"))
        return body, errored, ""

    LambdaFunction._invoke_lambda = _invoke_lambda


_out_lock = threading.Lock()


def emit(line):
    with _out_lock:
        sys.stdout.write(line + "\n")
        sys.stdout.flush()


def report_object_created():
    """S3 tells Lambda of each object created under a notification's
    filter. moto's S3 would invoke the function itself, but only in Docker
    and only inside the PutObject call. Instead every creation is reported
    (moto/s3/notifications.py, send_event, which every PutObject, CopyObject
    and CompleteMultipartUpload calls once the object is stored) to the
    test, which applies the template's filters and invokes the function
    asynchronously, as S3 does. moto's own handling still follows."""
    from moto.s3 import notifications

    send_event = notifications.send_event

    def report(account_id, event_name, bucket, key):
        name = getattr(event_name, "value", str(event_name))
        if name.startswith("s3:ObjectCreated:"):
            emit(
                "S3EVENT "
                + json.dumps(
                    {
                        "eventName": name[len("s3:") :],
                        "bucket": bucket.name,
                        "key": key.name,
                        "versionId": key.version_id if bucket.is_versioned else None,
                        "eTag": key.etag.strip('"'),
                        "size": key.size,
                        "lastModified": key.last_modified_ISO8601,
                    }
                )
            )
        send_event(account_id, event_name, bucket, key)

    notifications.send_event = report


def work_around_moto_gaps():
    """Make moto 5.2.1's Step Functions interpreter do what AWS does where
    segpilot's definition (statemachine/export.asl.json) meets its gaps.
    Every path below is under moto/stepfunctions/parser/.

    Left as they are, because the test never meets them or does not look:
    the ResultWriter writes only manifest.json (AWS also writes
    SUCCEEDED_n.json, FAILED_n.json; finalize reads neither); child
    executions keep no history; ItemBatcher's MaxInputBytesPerBatch is not
    enforced; States.ALL also catches States.Runtime (AWS does not); and a
    Lambda API error (HTTP 5xx) fails the Map child with States.Runtime
    "KeyError('RequestId')" (asl/component/state/exec/state_task/service/
    state_task_service_lambda.py) where AWS raises Lambda.ServiceException,
    which the definition retries: the test's Lambda never answers so
    (checkHealthy fails the test if it ever does)."""
    from moto.stepfunctions.models import StateMachine
    from moto.stepfunctions.parser.api import HistoryEventType, MapRunFailedEventDetails
    from moto.stepfunctions.parser.asl.component.common.error_name.failure_event import (
        FailureEvent,
        FailureEventException,
    )
    from moto.stepfunctions.parser.asl.component.common.error_name.states_error_name import (
        StatesErrorName,
    )
    from moto.stepfunctions.parser.asl.component.common.error_name.states_error_name_type import (
        StatesErrorNameType,
    )
    from moto.stepfunctions.parser.asl.component.state.exec.state_map.iteration.distributed_iteration_component import (
        DistributedIterationComponent,
    )
    from moto.stepfunctions.parser.asl.component.state.exec.state_map.iteration.itemprocessor.distributed_item_processor_worker import (
        DistributedItemProcessorWorker,
    )
    from moto.stepfunctions.parser.asl.component.state.exec.state_map.result_writer.result_writer_decl import (
        ResultWriter,
    )
    from moto.stepfunctions.parser.asl.component.state.exec.state_map.state_map import StateMap
    from moto.stepfunctions.parser.asl.eval.event.event_detail import EventDetails
    from moto.stepfunctions.parser.asl.eval.program_state import ProgramEnded, ProgramStopped
    from moto.stepfunctions.parser.asl.parse.asl_parser import AmazonStateLanguageParser
    from moto.stepfunctions.parser.asl.utils.json_path import extract_json

    # --- Gaps 1 and 2: what moto's grammar cannot parse.
    # (1) ItemBatcher: asl/antlr/runtime/ASLLexer.py has no such token, so
    #     CreateStateMachine answers InvalidDefinition. AWS gives each child
    #     execution {"BatchInput": <BatchInput>, "Items": [<up to
    #     MaxItemsPerBatch consecutive items>]}. Here the Map is parsed
    #     without its ItemBatcher but with an ItemSelector building that same
    #     object from $$.Map.Item.Value, and the Map's item list is cut into
    #     groups of MaxItemsPerBatch(Path) before the children start (see
    #     group_items below), so each child gets what AWS would give it.
    # (2) "ToleratedFailurePercentage": 0 is an INT where the grammar's rule
    #     (asl/antlr/runtime/ASLParser.py) wants a NUMBER; 0.0 parses. AWS
    #     takes any JSON number. Parsed as the same number, as a float.
    # The stored definition (DescribeStateMachine) stays the one deployed.
    def rewrite(states, batchers, nested=False):
        for name, state in states.items():
            if state.get("Type") != "Map":
                continue
            tolerated = state.get("ToleratedFailurePercentage")
            if isinstance(tolerated, int) and not isinstance(tolerated, bool):
                state["ToleratedFailurePercentage"] = float(tolerated)
            batcher = state.pop("ItemBatcher", None)
            if batcher is not None:
                if "ItemSelector" in state or "Parameters" in state or nested:
                    raise ValueError(
                        f"Map {name}: an ItemBatcher with an ItemSelector, or in a nested Map, is not emulated"
                    )
                state["ItemSelector"] = {
                    "BatchInput": batcher.get("BatchInput", {}),
                    "Items.$": "$$.Map.Item.Value",
                }
                batchers[name] = batcher
            processor = state.get("ItemProcessor") or state.get("Iterator") or {}
            rewrite(processor.get("States", {}), batchers, nested=True)

    parse = AmazonStateLanguageParser.parse

    def parse_as_aws(definition):
        doc = json.loads(definition)
        batchers = {}  # Map state name -> its ItemBatcher, for group_items
        rewrite(doc.get("States", {}), batchers)
        program, tree = parse(json.dumps(doc))
        for name, state in program.states.states.items():
            if isinstance(state, StateMap) and name in batchers:
                state.iteration_component.item_batcher = batchers[name]
        return program, tree

    AmazonStateLanguageParser.parse = staticmethod(parse_as_aws)

    map_run = DistributedIterationComponent._map_run

    def group_items(self, env, eval_input):
        items = env.stack.pop()
        # For gap 5: the failure tolerance counts items, not children.
        eval_input.map_run_record.total_items = len(items)
        batcher = getattr(self, "item_batcher", None)
        if batcher is not None:
            size = batcher.get("MaxItemsPerBatch")
            if "MaxItemsPerBatchPath" in batcher:
                size = extract_json(batcher["MaxItemsPerBatchPath"], env.states.get_input())
            size = int(size or len(items) or 1)
            items = [items[i : i + size] for i in range(0, len(items), size)]
        env.stack.append(items)
        map_run(self, env, eval_input)

    DistributedIterationComponent._map_run = group_items

    # --- Gap 3: ResultWriter's Parameters (Prefix.$) are evaluated against
    # the Map's result, the value on top of the stack when
    # asl/component/state/exec/state_map/result_writer/result_writer_decl.py
    # runs, so "$.mapResultsPrefix" is looked up in the children's outputs.
    # AWS evaluates them against the Map state's input.
    def write_results(self, env):
        results = env.stack.pop()
        env.stack.append(env.states.get_input())
        self.parargs.eval(env=env)
        parameters = env.stack.pop()
        env.stack.pop()  # the input
        env.stack.append(results)
        env.stack.append(parameters)
        self.resource_eval.eval_resource(env=env)

    ResultWriter._eval_body = write_results

    # --- Gap 4: every StartExecution after a state machine's first answers
    # 500 (TypeError: cannot pickle '_thread.RLock'): parser/models.py
    # deep-copies the state machine for the new execution, with its earlier
    # executions (which hold a lock) and its backend. AWS runs each
    # execution on the definition as it was when the execution started; no
    # other execution is part of that. The copy here keeps everything but
    # the executions, which it starts without.
    def copy_for_execution(self, memo):
        clone = copy.copy(self)
        clone.executions = []
        memo[id(self)] = clone
        return clone

    StateMachine.__deepcopy__ = copy_for_execution

    # --- Gap 5: a failed child never fails the Map: in
    # asl/component/state/exec/state_map/iteration/itemprocessor/distributed_item_processor_worker.py
    # a child ending in error is only counted, and the MapRunRecord
    # (.../itemprocessor/map_run_record.py) says "TODO: add support for
    # failure toleration fields". AWS fails the Map Run with
    # States.ExceedToleratedFailureThreshold as soon as the failed items
    # exceed ToleratedFailureCount or ToleratedFailurePercentage (a failed
    # child of an ItemBatcher fails all its items), starts no further
    # children, and the Map state's Retry/Catch see that error. (moto cannot
    # tell an unset tolerance from 0, so with both set both must be
    # exceeded here; segpilot's definition sets one.)
    eval_job = DistributedItemProcessorWorker._eval_job

    def eval_job_as_aws(self, env, job):
        eval_job(self, env, job)
        # Succeeded (ProgramEnded) or aborted (ProgramStopped) children are
        # not failures; an error or a timeout is.
        state = env.program_state()
        if isinstance(state, (ProgramEnded, ProgramStopped)):
            return
        logging.getLogger("moto_pipeline").warning(
            "a Map child failed (%s): %s", type(state).__name__, getattr(state, "error", None)
        )
        record = self._map_run_record
        items = len(job.job_input) if isinstance(job.job_input, list) else 1
        with self._job_pool._mutex:
            failed_items = getattr(record, "failed_items", 0) + items
            record.failed_items = failed_items
        total_items = getattr(record, "total_items", failed_items)
        over_count = failed_items > record.tolerated_failure_count
        over_percentage = failed_items * 100.0 > record.tolerated_failure_percentage * total_items
        if over_count and over_percentage:
            cause = (
                "The specified tolerated failure threshold was exceeded: "
                f"{failed_items} failed items"
            )
            job.job_output = FailureEventException(
                failure_event=FailureEvent(
                    env=env,
                    error_name=StatesErrorName(
                        typ=StatesErrorNameType.StatesExceedToleratedFailureThreshold
                    ),
                    event_type=HistoryEventType.MapRunFailed,
                    event_details=EventDetails(
                        mapRunFailedEventDetails=MapRunFailedEventDetails(
                            error=StatesErrorNameType.StatesExceedToleratedFailureThreshold.to_name(),
                            cause=cause,
                        )
                    ),
                )
            )

    DistributedItemProcessorWorker._eval_job = eval_job_as_aws


def main():
    if len(sys.argv) != 2:
        sys.exit("usage: moto_pipeline.py INVOKE_URL")
    # The interpreter logs every failed state with its whole parsed
    # definition: the first line of each is what a failing test needs.
    logging.basicConfig(
        level=logging.WARNING, stream=sys.stderr, format="%(levelname)s %(name)s: %(message).500s"
    )
    # It warns that ToleratedFailurePercentage has no effect: here it has
    # (work_around_moto_gaps, gap 5).
    logging.getLogger("moto.stepfunctions.parser.asl.parse.preprocessor").setLevel(logging.ERROR)
    logging.getLogger("werkzeug").setLevel(logging.WARNING)  # a line per request
    from moto.core.config import default_user_config
    from moto.server import ThreadedMotoServer

    route_lambda_invokes(sys.argv[1])
    report_object_created()
    work_around_moto_gaps()
    # Execute state machines (the issue's {"stepfunctions":
    # {"execute_state_machine": true}}, as POST /moto-api/config sets it).
    default_user_config["stepfunctions"]["execute_state_machine"] = True

    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    # The interpreter's own AWS calls (lambda:invoke, the ItemReader's and
    # ResultWriter's S3) go to http://localhost:$MOTO_PORT.
    os.environ["MOTO_PORT"] = str(port)
    emit(f"READY http://{host}:{port}")
    for line in sys.stdin:  # until the test closes it, or dies
        if line.startswith("SYNC "):
            emit("SYNCED " + line[len("SYNC ") :].strip())
    server.stop()


if __name__ == "__main__":
    main()

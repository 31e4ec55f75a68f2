"""Reading and writing files: case files (:mod:`.cases`) and safe output (:mod:`.files`).

Case files are validated here, once, at the boundary: a :class:`~hessverify.model.problem.Problem`
comes out with every name parsed into its type.  This layer imports the model and the engine's
budget (a case is refused before it is built when it would not fit), never a method, a
reference or anything above.
"""

from hessverify.io.files import (  # the former module hessverify.io: its public names
    MAX_CASE_BYTES,
    check_output_path,
    claim_output,
    read_case_text,
    report_set,
    strict_json,
    write_output,
)

__all__ = ["MAX_CASE_BYTES", "check_output_path", "claim_output", "read_case_text", "report_set", "strict_json",
           "write_output"]

"""Tool-integrated transcripts -> the cumulative program to run (the harness's `trajectory.extract_program`).

A transcript alternates rationale, ```python blocks (a line exactly "```python" ... a line exactly "```") and
```output blocks. All earlier programs whose output looks successful are concatenated (failed ones contribute only
their import lines), and `print(` lines are dropped from every program but the last, because each execution
starts from empty globals.
"""
from dataclasses import dataclass

_ERROR_WORDS = ("error", "exception", "no algorithms", "cannot", "nan", "...")
INVALID_PROGRAM = "raise ValueError('Invalid trajectory')"


@dataclass(frozen=True)
class Block:
    role: str  # "rationale" | "program" | "output"
    content: str


class _Malformed(Exception):
    pass


def parse_blocks(text: str) -> list[Block]:
    blocks: list[Block] = []
    role, content = "rationale", ""
    lines = text.split("\n")
    for i, line in enumerate(lines):
        if line == "```python":
            if role != "rationale":
                raise _Malformed("program inside a program or output")
            if content:
                blocks.append(Block(role, content))
                content = ""
            role = "program"
        elif role == "program" and line == "```":
            if not content:
                raise _Malformed("empty program")
            blocks.append(Block(role, content))
            role, content = "output", ""
        elif role == "output" and line.startswith("```output"):
            if content:
                raise _Malformed("text before an output block")
        elif role == "output" and line == "```":
            blocks.append(Block(role, content))
            role, content = "rationale", ""
        else:
            content += line + ("\n" if i < len(lines) - 1 else "")
    if content:
        blocks.append(Block(role, content))
    return blocks


def is_execution_success(output: str) -> bool:
    return all(word not in output.lower() for word in _ERROR_WORDS)


def extract_program(text: str) -> str:
    try:
        blocks = parse_blocks(text)
    except _Malformed:
        return INVALID_PROGRAM
    programs: list[str] = []
    imports: list[str] = []
    for i, block in enumerate(blocks):
        if block.role != "program":
            continue
        if i == len(blocks) - 1:
            programs.append(block.content)
            continue
        if blocks[i + 1].role != "output":
            return INVALID_PROGRAM  # the harness's assert inside the same try
        if is_execution_success(blocks[i + 1].content.strip()):
            programs.append(block.content)
        else:
            imports += [line for line in block.content.split("\n") if line.startswith(("import", "from"))]
    programs = programs or [""]
    if imports:
        programs[0] = "\n".join(imports) + "\n" + programs[0]
    programs[:-1] = ["\n".join(l for l in p.split("\n") if not l.strip().startswith("print(")) for p in programs[:-1]]
    return "\n".join(programs)

"""rho-eval: the Rho-1 math evaluation harness (math-evaluation-harness @7fd4949) against any TGI/OpenAI server.

prompts (prompt construction, stops), data (data sets, ground truth), normalize + extract (answers), grade +
latex_antlr (math equality), scoring (sandboxed timed grading, metrics), trajectory + tool_loop + executor
(tool-integrated runs), sandbox + sandbox_worker + sandbox_view + sandbox_child + sandbox_jobs + kernel + seccomp
(the sandbox every model-written program and answer goes through), client + runner (concurrent resumable runs),
regrade, cli.
"""

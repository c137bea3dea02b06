"""rho-eval: the Rho-1 math evaluation harness (math-evaluation-harness @7fd4949) against any TGI/OpenAI server.

prompts (prompt construction, stops), data (data sets, ground truth), normalize + extract (answers), grade +
latex_antlr (math equality), pool + scoring (timed grading, metrics), trajectory + tool_loop + executor +
sandbox_boot (tool-integrated runs in a sandbox), client + runner (concurrent resumable runs), regrade, cli.
"""

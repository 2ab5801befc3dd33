from lutnas.cli import run

run()

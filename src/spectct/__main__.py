from spectct.cli import main

main()

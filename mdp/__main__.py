from mdp.cli import main

main()

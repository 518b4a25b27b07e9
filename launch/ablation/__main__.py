"""`python -m launch.ablation`: the paper's ablation (launch/ablation/paper.py)."""
from launch.ablation.paper import main

if __name__ == "__main__":
    main()

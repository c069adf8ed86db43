"""How a plan is shown: terminal text, notebook HTML, and the views behind `print(plan)`."""

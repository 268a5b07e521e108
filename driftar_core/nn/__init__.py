"""Small network building blocks shared by heads of several plugins."""

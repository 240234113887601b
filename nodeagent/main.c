/* placeholder: replaced below in this session */
int main(void)
{
    return 0;
}
